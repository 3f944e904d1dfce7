// Infrastructure parameters of the test environment (infra/main.bicep).
using '../main.bicep'

param environmentName = 'test'
param baseName = 'contoso-events-test'
param dataverseUrl = 'https://contoso-test.crm.dynamics.com'
param allowedOrganizations = 'contoso-test.crm.dynamics.com'
// Set by the pipeline from its own identity; operators group from a pipeline variable.
param deployerPrincipalId = readEnvironmentVariable('DEPLOYER_PRINCIPAL_ID', '')
param operatorsPrincipalId = readEnvironmentVariable('OPERATORS_PRINCIPAL_ID', '')
param appUserObjectId = readEnvironmentVariable('APP_USER_OBJECT_ID', '')
param maximumInstances = 3 // x 16 in flight = 48 of the 52 one application user may have

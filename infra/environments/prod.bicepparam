// Infrastructure parameters of the prod environment (infra/main.bicep).
using '../main.bicep'

param environmentName = 'prod'
param baseName = 'contoso-events-prod'
param dataverseUrl = 'https://contoso.crm.dynamics.com'
param allowedOrganizations = 'contoso.crm.dynamics.com'
// Set by the pipeline from its own identity; operators group from a pipeline variable.
param deployerPrincipalId = readEnvironmentVariable('DEPLOYER_PRINCIPAL_ID', '')
param operatorsPrincipalId = readEnvironmentVariable('OPERATORS_PRINCIPAL_ID', '')
param appUserObjectId = readEnvironmentVariable('APP_USER_OBJECT_ID', '')
param maximumInstances = 3 // x 16 in flight = 48 of the 52 one application user may have

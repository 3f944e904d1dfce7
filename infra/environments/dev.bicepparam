// Infrastructure parameters of the dev environment (infra/main.bicep).
using '../main.bicep'

param environmentName = 'dev'
param baseName = 'contoso-events-dev'
param dataverseUrl = 'https://contoso-dev.crm.dynamics.com'
param allowedOrganizations = 'contoso-dev.crm.dynamics.com'
// Set by the pipeline from its own identity; operators group from a pipeline variable.
param deployerPrincipalId = readEnvironmentVariable('DEPLOYER_PRINCIPAL_ID', '')
param operatorsPrincipalId = readEnvironmentVariable('OPERATORS_PRINCIPAL_ID', '')
param appUserObjectId = readEnvironmentVariable('APP_USER_OBJECT_ID', '')
param maximumInstances = 3 // x 16 in flight = 48 of the 52 one application user may have

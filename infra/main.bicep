// Infrastructure of one environment: the function app (Flex Consumption, Python), its
// user-assigned identity, storage, Service Bus queue (and optional topic), optional Event Hub,
// Application Insights and a Key Vault for the key Dataverse posts with.
//
// Identity-based everywhere: the app reaches storage, Service Bus and Event Hubs with its
// managed identity and least-privilege data roles. The only key is the send-only SAS rule that
// Dataverse needs (service endpoints cannot use Entra ID); it goes to Key Vault, never to an
// output or a log. Deploy with: az deployment group create -g <rg> -f infra/main.bicep
//   -p infra/environments/<env>.bicepparam

targetScope = 'resourceGroup'

@description('dev, test, prod...: names the environment file infra/environments/<name>.toml')
param environmentName string

@description('Prefix of every resource name, e.g. contoso-events-dev')
@maxLength(21)
param baseName string

param location string = resourceGroup().location

@description('Dataverse environment the handlers write back to, https://<org>.crm.dynamics.com')
param dataverseUrl string

@description('Organizations whose events are accepted: ids, unique names or host names')
param allowedOrganizations string

@description('Entra object id of the application user in Dataverse (events it initiates are skipped); empty: the managed identity, which is that user when Dataverse knows the identity as its application user')
param appUserObjectId string = ''

@description('Tag on the app writes, recognised by the loop guard')
param writeTag string = 'dataverse-event-consumers'

param queueName string = 'dataverse-events'

@description('Also deploy a topic and subscription for Dataverse events')
param useTopic bool = false
param topicName string = 'dataverse'
param subscriptionName string = 'consumers'

@description('Also deploy an Event Hub for Dataverse events')
param useEventHub bool = false
param eventHubName string = 'dataverse-events'
param consumerGroupName string = 'function-app'

@description('Principal that deploys (pipeline identity): reads the SAS key to register endpoints')
param deployerPrincipalId string = ''

@description('Group of operators: dead-letter tooling and dead-letter counts (Service Bus Data Owner)')
param operatorsPrincipalId string = ''

@description('Python of the function app. 3.13 runs the worker from the app\'s own azure-functions-runtime (requirements.lock); 3.11 and 3.12 stay supported')
@allowed(['3.11', '3.12', '3.13'])
param pythonVersion string = '3.13'

@description('MaxDeliveryCount of the queue and subscription; the app dead-letters on that delivery itself, with the real reason')
@minValue(2)
param maxDeliveryCount int = 10

param maximumInstances int = 40
param healthSchedule string = '0 */15 * * * *'
param housekeepingSchedule string = '0 30 3 * * *'

@description('Days until the Key Vault copies of the send keys expire; each deployment renews them')
param secretLifetimeDays int = 180

@description('Deployment time, for secret expiry (leave the default)')
param deployedAt string = utcNow()

var storageName = take('st${replace(baseName, '-', '')}${uniqueString(resourceGroup().id)}', 24)
var deploymentContainer = 'app-package'
var poisonContainer = 'dataverse-poison'
var idempotencyTable = 'dataverseidempotency'
var sendRuleName = 'dataverse-send'

// Built-in role definitions (ids are the same in every tenant).
var roles = {
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  eventHubsDataReceiver: 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${baseName}'
  location: location
}

// --- storage: host state, deployment package, poison store, idempotency table -------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    // The portal and tools use Entra ID too, never a key they would have to fetch.
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // A parked event deleted or overwritten by mistake (tools.deadletter parked ...) can be
    // brought back: the poison store is the only copy of an Event Hubs event the app gave up on.
    deleteRetentionPolicy: { enabled: true, days: 14 }
    containerDeleteRetentionPolicy: { enabled: true, days: 14 }
    isVersioningEnabled: true
  }
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainer
}

resource poisonStore 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: poisonContainer
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource claimsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tables
  name: idempotencyTable
}

// --- monitoring ---------------------------------------------------------------------------------

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${baseName}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${baseName}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

// --- Service Bus: Dataverse sends with SAS (its only option), the app receives with its identity --

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: 'sb-${baseName}'
  location: location
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    minimumTlsVersion: '1.2'
    disableLocalAuth: false // Dataverse service endpoints post with a SAS key
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: serviceBus
  name: queueName
  properties: {
    maxDeliveryCount: maxDeliveryCount
    // The longest lock: a Retry leaves the message locked, so this is the wait before each
    // redelivery. It outlasts a crashed instance's claim (a 5-minute lease) and any Retry-After.
    lockDuration: 'PT5M'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
    requiresSession: false // Dataverse sets no session id
  }
}

resource queueSendRule 'Microsoft.ServiceBus/namespaces/queues/authorizationRules@2022-10-01-preview' = {
  parent: queue
  name: sendRuleName
  properties: { rights: [ 'Send' ] }
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' = if (useTopic) {
  parent: serviceBus
  name: topicName
  properties: { defaultMessageTimeToLive: 'P14D' }
}

resource topicSendRule 'Microsoft.ServiceBus/namespaces/topics/authorizationRules@2022-10-01-preview' = if (useTopic) {
  parent: topic
  name: sendRuleName
  properties: { rights: [ 'Send' ] }
}

resource subscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' = if (useTopic) {
  parent: topic
  name: subscriptionName
  properties: {
    maxDeliveryCount: maxDeliveryCount
    // The longest lock: a Retry leaves the message locked, so this is the wait before each
    // redelivery. It outlasts a crashed instance's claim (a 5-minute lease) and any Retry-After.
    lockDuration: 'PT5M'
    deadLetteringOnMessageExpiration: true
    requiresSession: false
  }
}

// A resubmitted dead letter (tools.deadletter) goes to the topic naming its subscription in
// ResubmitTo: this rule takes Dataverse's posts (no ResubmitTo) and its own resubmissions only,
// so the other subscriptions do not receive it again. Any other subscription on this topic needs
// the same rule with its own name.
resource subscriptionRule 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2022-10-01-preview' = if (useTopic) {
  parent: subscription
  name: '$Default'
  properties: {
    filterType: 'SqlFilter'
    sqlFilter: {
      sqlExpression: 'user.ResubmitTo IS NULL OR user.ResubmitTo = \'${subscriptionName}\''
    }
  }
}

// --- Event Hubs (optional) ----------------------------------------------------------------------

resource eventHubs 'Microsoft.EventHub/namespaces@2024-01-01' = if (useEventHub) {
  name: 'evhns-${baseName}'
  location: location
  sku: { name: 'Standard', tier: 'Standard', capacity: 1 }
  properties: {
    minimumTlsVersion: '1.2'
    disableLocalAuth: false // Dataverse posts to Event Hubs with SAS only
  }
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = if (useEventHub) {
  parent: eventHubs
  name: eventHubName
  properties: {
    partitionCount: 4
    messageRetentionInDays: 7
  }
}

resource consumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = if (useEventHub) {
  parent: hub
  name: consumerGroupName
}

resource hubSendRule 'Microsoft.EventHub/namespaces/eventhubs/authorizationRules@2024-01-01' = if (useEventHub) {
  parent: hub
  name: sendRuleName
  properties: { rights: [ 'Send' ] }
}

// --- Key Vault: the send key, for tools.endpoints to give to Dataverse --------------------------

// Secrets expire, so a key nobody has redeployed for months shows up (the health check warns).
var secretAttributes = { exp: dateTimeToEpoch(dateTimeAdd(deployedAt, 'P${secretLifetimeDays}D')) }

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${baseName}'
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
  }
}

resource sendKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'dataverse-send-key'
  properties: {
    value: queueSendRule.listKeys().primaryKey
    contentType: 'Service Bus SAS key (rule dataverse-send, send only)'
    attributes: secretAttributes
  }
}

resource topicSendKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useTopic) {
  parent: vault
  name: 'dataverse-topic-send-key'
  properties: {
    value: useTopic ? topicSendRule.listKeys().primaryKey : ''
    attributes: secretAttributes
  }
}

resource hubSendKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useEventHub) {
  parent: vault
  name: 'dataverse-hub-send-key'
  properties: {
    value: useEventHub ? hubSendRule.listKeys().primaryKey : ''
    attributes: secretAttributes
  }
}

// --- the function app -------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${baseName}'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${baseName}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstances
        instanceMemoryMB: 2048
      }
      runtime: { name: 'python', version: pythonVersion }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [
        // Host storage, identity-based.
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        // Triggers, identity-based.
        { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: '${serviceBus.name}.servicebus.windows.net' }
        { name: 'ServiceBusConnection__credential', value: 'managedidentity' }
        { name: 'ServiceBusConnection__clientId', value: identity.properties.clientId }
        { name: 'EventHubConnection__fullyQualifiedNamespace', value: useEventHub ? '${eventHubs.name}.servicebus.windows.net' : '' }
        { name: 'EventHubConnection__credential', value: 'managedidentity' }
        { name: 'EventHubConnection__clientId', value: identity.properties.clientId }
        { name: 'DATAVERSE_QUEUE_NAME', value: queueName }
        { name: 'DATAVERSE_TOPIC_NAME', value: useTopic ? topicName : '' }
        { name: 'DATAVERSE_SUBSCRIPTION_NAME', value: useTopic ? subscriptionName : '' }
        { name: 'DATAVERSE_EVENT_HUB_NAME', value: useEventHub ? eventHubName : '' }
        { name: 'DATAVERSE_EVENT_HUB_CONSUMER_GROUP', value: consumerGroupName }
        // The app's own settings (shared/settings.py).
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
        // Turns on the app's fail-closed guards whatever the plan sets (shared/settings.py).
        { name: 'DATAVERSE_HOSTING', value: 'azure' }
        { name: 'DATAVERSE_URL', value: dataverseUrl }
        { name: 'ALLOWED_ORGANIZATIONS', value: allowedOrganizations }
        // The loop guard's one rule (the write tag is caller-controlled, so never trusted alone).
        { name: 'APP_USER_OBJECT_ID', value: empty(appUserObjectId) ? identity.properties.principalId : appUserObjectId }
        { name: 'DATAVERSE_WRITE_TAG', value: writeTag }
        { name: 'DATAVERSE_CALL_BUDGET_SECONDS', value: '45' }
        { name: 'DATAVERSE_MAX_CONCURRENCY', value: '16' }
        { name: 'IDEMPOTENCY_STORE', value: 'table' }
        { name: 'IDEMPOTENCY_TABLE', value: idempotencyTable }
        { name: 'POISON_CONTAINER', value: poisonContainer }
        { name: 'HOUSEKEEPING_SCHEDULE', value: housekeepingSchedule }
        { name: 'DATAVERSE_ENVIRONMENT', value: environmentName }
        { name: 'HEALTH_SCHEDULE', value: healthSchedule }
        { name: 'HEALTH_LOOKBACK_MINUTES', value: '20' }
        { name: 'SERVICE_BUS_MAX_DELIVERY_COUNT', value: string(maxDeliveryCount) }
        { name: 'LOG_ATTRIBUTE_VALUES', value: 'false' }
        { name: 'DATAVERSE_OPENTELEMETRY', value: 'false' }
        // Telemetry with Entra authentication (local auth is off on the component).
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identity.properties.clientId};Authorization=AAD' }
      ]
    }
  }
}

// Deployments go through Entra (the pipelines' federated identity): no FTP or SCM passwords.
resource noFtpPassword 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: { allow: false }
}

resource noScmPassword 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: { allow: false }
}

// --- diagnostic settings: who read a secret, who sent or settled, what the host logged ------------

resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-${logs.name}'
  scope: vault
  properties: {
    workspaceId: logs.id
    logs: [ { categoryGroup: 'audit', enabled: true } ]
  }
}

resource serviceBusLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-${logs.name}'
  scope: serviceBus
  properties: {
    workspaceId: logs.id
    logs: [ { categoryGroup: 'allLogs', enabled: true } ]
    metrics: [ { category: 'AllMetrics', enabled: true } ]
  }
}

resource eventHubsLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (useEventHub) {
  name: 'to-${logs.name}'
  scope: eventHubs
  properties: {
    workspaceId: logs.id
    logs: [ { categoryGroup: 'allLogs', enabled: true } ]
    metrics: [ { category: 'AllMetrics', enabled: true } ]
  }
}

resource appLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-${logs.name}'
  scope: app
  properties: {
    workspaceId: logs.id
    logs: [ { category: 'FunctionAppLogs', enabled: true } ]
  }
}

// --- role assignments: least privilege for the app identity -----------------------------------

resource queueReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, identity.id, roles.serviceBusDataReceiver)
  scope: queue
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
  }
}

resource subscriptionReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useTopic) {
  name: guid(resourceGroup().id, subscriptionName, identity.id, roles.serviceBusDataReceiver)
  scope: subscription
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
  }
}

resource hubReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useEventHub) {
  name: guid(resourceGroup().id, eventHubName, identity.id, roles.eventHubsDataReceiver)
  scope: hub
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataReceiver)
  }
}

// Host state, the deployment package, Event Hubs checkpoints and the poison store are blobs.
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

// Idempotency claims and ordering watermarks.
resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// --- people and pipelines ---------------------------------------------------------------------

resource deployerReadsKey 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: deployerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource operatorsManageDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorsPrincipalId)) {
  name: guid(serviceBus.id, operatorsPrincipalId, roles.serviceBusDataOwner)
  scope: serviceBus
  properties: {
    principalId: operatorsPrincipalId
    principalType: 'Group'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
  }
}

// Names only: no key, connection string or secret leaves the deployment.
output functionAppName string = app.name
output storageAccountName string = storage.name
output serviceBusNamespace string = serviceBus.name
output keyVaultName string = vault.name
output identityClientId string = identity.properties.clientId

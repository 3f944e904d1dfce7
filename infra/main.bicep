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

// Sizing, from one application user's service protection limits per Dataverse web server
// (Learn: 6,000 requests per 300 s = 20 requests/s, 52 in flight):
//   in flight needed = write rate x Dataverse latency (Little's law); at the 20/s budget and
//   200 ms a write, 4 requests in flight use it all;
//   instances = ceil(in flight / dataverseMaxConcurrency), and no more than 52 in flight in all:
//   maximumInstances x dataverseMaxConcurrency <= 52 keeps the fleet under the concurrency limit
//   (3 x 16 = 48). More instances add only 429s; the adaptive limit (pacing.py) trims the rest.
// Past 20 writes/s, split the handlers across apps with application users of their own
// (README, "Sizing").
@description('Most instances Flex Consumption may run; maximumInstances x dataverseMaxConcurrency <= 52')
param maximumInstances int = 3

@description('Dataverse requests in flight per instance (DATAVERSE_MAX_CONCURRENCY)')
@minValue(1)
param dataverseMaxConcurrency int = 16
@description('Requests per 300 s the whole fleet sends as the app user (DATAVERSE_REQUEST_BUDGET); 0: not counted')
@minValue(0)
@maxValue(6000)
param dataverseRequestBudget int = 5700
param healthSchedule string = '0 */15 * * * *'
param housekeepingSchedule string = '0 30 3 * * *'

@description('Who is told when an alert fires: e-mail addresses of the on-call operators')
param alertEmails array = []

@description('Active messages in the queue above which the consumer is taken as stuck')
param activeMessagesThreshold int = 1000

@description('p95 end-to-end lag (seconds, now minus OperationCreatedOn) above which to alert')
param lagP95ThresholdSeconds int = 300

@description('Dead-lettered events in 15 minutes above which to alert')
param deadLetterRateThreshold int = 5

@description('Days until the Key Vault copies of the send keys expire; each deployment renews them')
param secretLifetimeDays int = 180

@description('Deployment time, for secret expiry (leave the default)')
param deployedAt string = utcNow()

// --- networking ----------------------------------------------------------------------------------

@description('Private mode: the app joins a virtual network with one outbound address (a NAT gateway); storage and Key Vault take traffic only through private endpoints in it')
param privateNetworking bool = false

@description('Address space of the virtual network in private mode (two /24 subnets are cut from it)')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Public ranges (CIDR) that may still reach Key Vault in private mode: the deployment runners, which read the send key to register endpoints; empty: the virtual network only (self-hosted runners)')
param deployerIpRanges array = []

@description('Public ranges (CIDR) that may reach Service Bus and Event Hubs: Dataverse\'s outbound ranges for its region (service tag AzureCloud.<region>), plus in private mode the NAT address is added; empty: any address with a valid key or token')
param brokerIpRanges array = []

var storageName = take('st${replace(baseName, '-', '')}${uniqueString(resourceGroup().id)}', 24)
var deploymentContainer = 'app-package'
var poisonContainer = 'dataverse-poison'
var idempotencyTable = 'dataverseidempotency'
var sendRuleName = 'dataverse-send'

// Built-in role definitions (ids are the same in every tenant).
var roles = {
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
    // Public mode: Flex Consumption instances have no fixed outbound address, so the network
    // cannot narrow who reaches storage; Entra ID with the roles below is the boundary. Private
    // mode: only the private endpoints.
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
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
    // Ingestion takes Entra tokens only (local auth off). Closing it to the public network needs
    // an Azure Monitor Private Link Scope, which is shared by a whole network: left to the operator.
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
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
    // Dataverse posts over the public network (private endpoints need Premium and Dataverse
    // cannot use them), so public access stays on; brokerIpRanges narrows it to Dataverse's
    // region and the app's NAT address.
    publicNetworkAccess: 'Enabled'
  }
}

// RootManageSharedAccessKey: Service Bus creates it with every namespace and no template can
// remove it. Nothing here uses it, and its keys come only from listKeys, a control-plane action
// of Owner or Contributor on the namespace, which this template grants nobody (the pipeline's
// identity has it on the resource group: guard that identity). Rotate or delete it after the
// first deployment where policy asks: az servicebus namespace authorization-rule delete
// --name RootManageSharedAccessKey. The same holds for the Event Hubs namespace.

// Brokers see Dataverse, the app and the operators' tools: the app's address is the NAT
// gateway's in private mode, and unknown otherwise, so with brokerIpRanges set in public mode
// the operator must list it too (or run private).
var brokerAllowedRanges = concat(brokerIpRanges, privateNetworking ? [ natAddress.properties.ipAddress ] : [])

resource serviceBusNetwork 'Microsoft.ServiceBus/namespaces/networkRuleSets@2022-10-01-preview' = {
  parent: serviceBus
  name: 'default'
  properties: {
    publicNetworkAccess: 'Enabled'
    defaultAction: empty(brokerIpRanges) ? 'Allow' : 'Deny'
    ipRules: map(brokerAllowedRanges, range => { ipMask: range, action: 'Allow' })
    trustedServiceAccessEnabled: false // Dataverse is not a trusted service
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
    publicNetworkAccess: 'Enabled' // as Service Bus: Dataverse posts over the public network
  }
}

resource eventHubsNetwork 'Microsoft.EventHub/namespaces/networkRuleSets@2024-01-01' = if (useEventHub) {
  parent: eventHubs
  name: 'default'
  properties: {
    publicNetworkAccess: 'Enabled'
    defaultAction: empty(brokerIpRanges) ? 'Allow' : 'Deny'
    ipRules: map(brokerAllowedRanges, range => { ipMask: range, action: 'Allow' })
    trustedServiceAccessEnabled: false
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
    // Public mode: the pipeline's runners read the send key from addresses nobody can list, so
    // access is by RBAC (one secret reader) and audited. Private mode: the private endpoint, and
    // deployerIpRanges if runners are not inside the network.
    publicNetworkAccess: privateNetworking && empty(deployerIpRanges) ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
      ipRules: map(deployerIpRanges, range => { value: range })
    }
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

// --- private mode: network, one outbound address, private endpoints for storage and Key Vault --

var vnetName = 'vnet-${baseName}'

resource natAddress 'Microsoft.Network/publicIPAddresses@2024-01-01' = if (privateNetworking) {
  name: 'pip-${baseName}-nat'
  location: location
  sku: { name: 'Standard' }
  properties: { publicIPAllocationMethod: 'Static' }
}

resource nat 'Microsoft.Network/natGateways@2024-01-01' = if (privateNetworking) {
  name: 'ng-${baseName}'
  location: location
  sku: { name: 'Standard' }
  properties: { publicIpAddresses: [ { id: natAddress.id } ] }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-01-01' = if (privateNetworking) {
  name: vnetName
  location: location
  properties: {
    addressSpace: { addressPrefixes: [ vnetAddressPrefix ] }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: cidrSubnet(vnetAddressPrefix, 24, 0)
          delegations: [ { name: 'flex-consumption', properties: { serviceName: 'Microsoft.App/environments' } } ]
          natGateway: { id: nat.id }
        }
      }
      {
        name: 'endpoints'
        properties: {
          addressPrefix: cidrSubnet(vnetAddressPrefix, 24, 1)
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

// Blob (host state, package, checkpoints, poison store) and Table (claims) are what the app
// uses of storage; no queue endpoint is needed.
var privateLinks = [
  { name: 'blob', target: storage.id, group: 'blob', zone: 'privatelink.blob.${environment().suffixes.storage}' }
  { name: 'table', target: storage.id, group: 'table', zone: 'privatelink.table.${environment().suffixes.storage}' }
  { name: 'vault', target: vault.id, group: 'vault', zone: 'privatelink.vaultcore.azure.net' }
]

resource privateZones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for link in privateLinks: if (privateNetworking) {
  name: link.zone
  location: 'global'
}]

resource privateZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (link, i) in privateLinks: if (privateNetworking) {
  parent: privateZones[i]
  name: vnetName
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnet.id }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-01-01' = [for link in privateLinks: if (privateNetworking) {
  name: 'pe-${baseName}-${link.name}'
  location: location
  properties: {
    subnet: { id: resourceId('Microsoft.Network/virtualNetworks/subnets', vnetName, 'endpoints') }
    privateLinkServiceConnections: [
      { name: link.name, properties: { privateLinkServiceId: link.target, groupIds: [ link.group ] } }
    ]
  }
  dependsOn: [ vnet ]
}]

resource privateEndpointZones 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-01-01' = [for (link, i) in privateLinks: if (privateNetworking) {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [ { name: link.name, properties: { privateDnsZoneId: privateZones[i].id } } ]
  }
}]

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
  // Private mode: the subnet and the storage endpoints exist before the app reads its package.
  dependsOn: [ vnet, privateEndpointZones ]
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Flex Consumption integrates with a subnet delegated to Microsoft.App/environments; all
    // outbound traffic then leaves through the network (and its NAT address).
    virtualNetworkSubnetId: privateNetworking ? resourceId('Microsoft.Network/virtualNetworks/subnets', vnetName, 'app') : null
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
      // The app has no HTTP functions: its site refuses every request. The deployment endpoint
      // (scm) stays reachable for the pipelines, which authenticate with Entra ID only (basic
      // publishing credentials are off below).
      ipSecurityRestrictionsDefaultAction: 'Deny'
      scmIpSecurityRestrictionsUseMain: false
      scmIpSecurityRestrictionsDefaultAction: 'Allow'
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
        { name: 'DATAVERSE_MAX_CONCURRENCY', value: string(dataverseMaxConcurrency) }
        // The fleet's requests per 300 s, counted together in the idempotency table: 95% of the
        // app user's 6,000 (README, "Sizing"), the rest left to the health timer and tools.
        { name: 'DATAVERSE_REQUEST_BUDGET', value: string(dataverseRequestBudget) }
        { name: 'IDEMPOTENCY_STORE', value: 'table' }
        { name: 'IDEMPOTENCY_TABLE', value: idempotencyTable }
        { name: 'POISON_CONTAINER', value: poisonContainer }
        { name: 'HOUSEKEEPING_SCHEDULE', value: housekeepingSchedule }
        { name: 'DATAVERSE_ENVIRONMENT', value: environmentName }
        { name: 'HEALTH_SCHEDULE', value: healthSchedule }
        { name: 'HEALTH_LOOKBACK_MINUTES', value: '20' }
        { name: 'SERVICE_BUS_MAX_DELIVERY_COUNT', value: string(maxDeliveryCount) }
        { name: 'LOG_ATTRIBUTE_VALUES', value: 'false' }
        // The app's spans and metrics to Application Insights (its logs go through the host).
        { name: 'DATAVERSE_OPENTELEMETRY', value: 'true' }
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

// --- alerts and the operator's workbook ---------------------------------------------------------
// What pages someone, and the pictures an operator opens first. The KQL lives in
// infra/queries/*.kql (tests/infra check their tables and columns against the Application
// Insights schema the app writes to: consumer spans in AppRequests, Dataverse requests in
// AppDependencies, logs in AppTraces).

resource operators 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${baseName}'
  location: 'global'
  properties: {
    groupShortName: take(replace(baseName, '-', ''), 12)
    enabled: true
    emailReceivers: [for (address, i) in alertEmails: {
      name: 'operator-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

var alertAction = { actionGroups: [ operators.id ] }

// Service Bus: messages dead-lettered (the app does it only with a reason a human can act on).
resource deadLetteredAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${baseName}-dead-lettered'
  location: 'global'
  properties: {
    description: 'Messages were dead-lettered: run tools.deadletter list to read their reasons'
    severity: 2
    enabled: true
    scopes: [ serviceBus.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'dead-lettered'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [ { name: 'EntityName', operator: 'Include', values: [ '*' ] } ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: [ alertAction ]
  }
}

// Service Bus: a backlog that grows means the app stopped consuming (or cannot keep up).
resource activeMessagesAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${baseName}-backlog'
  location: 'global'
  properties: {
    description: 'The queue holds more active messages than the app drains: is the function app running?'
    severity: 2
    enabled: true
    scopes: [ serviceBus.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'active-messages'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'ActiveMessages'
          dimensions: [ { name: 'EntityName', operator: 'Include', values: [ '*' ] } ]
          operator: 'GreaterThan'
          threshold: activeMessagesThreshold
          timeAggregation: 'Average'
        }
      ]
    }
    actions: [ alertAction ]
  }
}

// Event Hubs (Standard) exposes no consumer-lag metric: a hub that receives while the app sends
// nothing out shows as incoming messages with no outgoing ones, and the lag alert below (from
// the app's own spans) covers both transports.
resource eventHubIdleConsumerAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = if (useEventHub) {
  name: 'alert-${baseName}-hub-unread'
  location: 'global'
  properties: {
    description: 'Events arrive in the hub but none are read: the Event Hub trigger is not consuming'
    severity: 2
    enabled: true
    scopes: [ eventHubs.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'outgoing'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.EventHub/namespaces'
          metricName: 'OutgoingMessages'
          operator: 'LessThanOrEqual'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: [ alertAction ]
  }
}

// Log alerts on the app's own telemetry (the KQL files the workbook also uses).
var logAlerts = [
  {
    name: 'health'
    description: 'A health check failed: read its line in the workbook, then the README "Operate" table'
    query: loadTextContent('queries/health-failures.kql')
    threshold: 0
  }
  {
    name: 'lag-p95'
    description: 'p95 end-to-end lag is over the threshold: throttling, a backlog, or a slow handler'
    query: '${loadTextContent('queries/lag-p95.kql')}| where P95 > ${lagP95ThresholdSeconds}\n'
    threshold: 0
  }
  {
    name: 'dead-letter-rate'
    description: 'Events are being dead-lettered: tools.deadletter list shows the reasons'
    query: '${loadTextContent('queries/dead-letter-rate.kql')}| where DeadLetters > ${deadLetterRateThreshold}\n'
    threshold: 0
  }
]

resource logAlertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for alert in logAlerts: {
  name: 'alert-${baseName}-${alert.name}'
  location: location
  properties: {
    description: alert.description
    severity: 2
    enabled: true
    scopes: [ logs.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: alert.threshold
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: [ operators.id ] }
  }
}]

// The workbook an operator opens first: one query per picture, the same files.
var workbookQueries = [
  { title: 'Events per minute by outcome', query: loadTextContent('queries/events-by-outcome.kql') }
  { title: 'End-to-end lag percentiles (s)', query: loadTextContent('queries/lag-percentiles.kql') }
  { title: 'Dead letters and parked events by reason', query: loadTextContent('queries/dead-letters-by-reason.kql') }
  { title: 'Dataverse requests and throttling', query: loadTextContent('queries/dataverse-requests.kql') }
  { title: 'Health checks failing', query: loadTextContent('queries/health-failures.kql') }
]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, baseName, 'operator-workbook')
  location: location
  kind: 'shared'
  properties: {
    displayName: 'Dataverse event consumers (${environmentName})'
    category: 'workbook'
    sourceId: logs.id
    serializedData: string({
      version: 'Notebook/1.0'
      items: [for (item, i) in workbookQueries: {
        type: 3
        name: 'query-${i}'
        content: {
          version: 'KqlItem/1.0'
          title: item.title
          query: item.query
          queryType: 0
          resourceType: 'microsoft.operationalinsights/workspaces'
        }
      }]
    })
  }
}

// --- role assignments: least privilege for the app identity -----------------------------------

// Service Bus triggers scale on the entity's message count, which the extension reads through
// the administration API (GetQueueRuntimeProperties / GetSubscriptionRuntimeProperties). With
// Data Receiver only, that read fails silently and scaling falls back to peeking, which lags a
// backlog (Learn "Event-driven scaling", azure-functions-host#7921). Service Bus has no data
// action narrower than Microsoft.ServiceBus/* for management reads, so the least role that
// scales correctly is Data Owner, granted on the one entity the trigger reads and nowhere else.
resource queueConsumer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, identity.id, roles.serviceBusDataOwner)
  scope: queue
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
  }
}

resource subscriptionConsumer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useTopic) {
  name: guid(resourceGroup().id, subscriptionName, identity.id, roles.serviceBusDataOwner)
  scope: subscription
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
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
// Account scope: the host creates its own containers (azure-webjobs-hosts, -secrets, the
// Event Hubs checkpoint container), whose names it chooses.
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

// Idempotency claims and ordering watermarks: this one table, which the template creates (the
// app's create-if-missing is refused under this scope, and takes that as "it exists").
resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(claimsTable.id, identity.id, roles.storageTableDataContributor)
  scope: claimsTable
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

// Operators read dead-letter counts (tools.health, a management read), receive dead letters
// and resubmit them (tools.deadletter): Data Owner on the queue, and on the topic (which holds
// its subscriptions and takes the resubmissions). Not the namespace: other entities stay theirs.
resource operatorsOnQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorsPrincipalId)) {
  name: guid(queue.id, operatorsPrincipalId, roles.serviceBusDataOwner)
  scope: queue
  properties: {
    principalId: operatorsPrincipalId
    principalType: 'Group'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
  }
}

resource operatorsOnTopic 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorsPrincipalId) && useTopic) {
  name: guid(resourceGroup().id, topicName, operatorsPrincipalId, roles.serviceBusDataOwner)
  scope: topic
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
@description('The app\'s one outbound address in private mode (empty otherwise): list it where Dataverse or a partner filters by address')
output outboundAddress string = privateNetworking ? natAddress.properties.ipAddress : ''

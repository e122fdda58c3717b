// fluxtrail on Azure: a Flex Consumption Function App (custom handler) with a system-assigned
// identity, a Storage account for the ledger tables and the deployment package, a Service Bus
// topic with duplicate detection and example subscriptions, Application Insights, and the role
// assignments that let the app use all of it without keys.
//
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.json

@description('Name prefix for every resource (lowercase letters and digits).')
@minLength(3)
@maxLength(11)
param name string = 'fluxtrail'

param location string = resourceGroup().location

@description('Clusters that get a drift subscription of their own.')
param clusters array = [
  'prod-eu'
  'prod-us'
]

@description('How long a pushed commit may stay un-applied before it is reported stalled.')
param stallAfter string = '15m'

@description('The Service Bus topic fluxtrail publishes to.')
param topicName string = 'fluxtrail'

var suffix = uniqueString(resourceGroup().id)
var storageName = toLower('${name}${suffix}')
var deploymentContainer = 'deployments'

// Built-in roles (reference notes).
var roleTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var roleBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var roleServiceBusDataSender = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var roleMonitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption reaches the account over its public endpoint unless the app is VNet-integrated with private endpoints, which this template does not set up; access is identity-only (shared keys off).
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; anonymous blob access is off.
  // checkov:skip=CKV_AZURE_206: zone-redundant (ZRS); geo-replication is the deployer's cost decision for a ledger that Git and Flux can re-send.
  // checkov:skip=CKV_AZURE_43: the name is take(toLower(prefix + uniqueString()), 24): lowercase letters and digits by construction, which checkov cannot evaluate.
  name: take(storageName, 24)
  location: location
  sku: {
    name: 'Standard_ZRS'
  }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // The app reaches tables and the deployment container with its identity.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deployments 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: '${name}-sb-${suffix}'
  location: location
  sku: {
    // Topics need Standard or higher.
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    minimumTlsVersion: '1.2'
    // The app sends with its identity; no SAS keys in use.
    disableLocalAuth: true
  }
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' = {
  parent: serviceBus
  name: topicName
  properties: {
    // fluxtrail re-sends with the same MessageId; the broker absorbs the duplicates.
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'P1D'
    defaultMessageTimeToLive: 'P14D'
  }
}

resource ticketing 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' = {
  parent: topic
  name: 'ticketing'
  properties: {
    deadLetteringOnFilterEvaluationExceptions: true
    maxDeliveryCount: 10
  }
}

resource ticketingRule 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2022-10-01-preview' = {
  parent: ticketing
  name: 'failures-and-stalls'
  properties: {
    filterType: 'SqlFilter'
    sqlFilter: {
      sqlExpression: 'type IN (\'io.fluxtrail.apply.failed\', \'io.fluxtrail.apply.recovered\', \'io.fluxtrail.rollout.stalled\')'
    }
  }
}

resource driftSubscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' = [for cluster in clusters: {
  parent: topic
  name: 'drift-${cluster}'
  properties: {
    maxDeliveryCount: 10
  }
}]

resource driftRules 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2022-10-01-preview' = [for (cluster, i) in clusters: {
  parent: driftSubscriptions[i]
  name: 'drift'
  properties: {
    filterType: 'SqlFilter'
    sqlFilter: {
      sqlExpression: 'type = \'io.fluxtrail.drift.detected\' AND cluster = \'${cluster}\''
    }
  }
}]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption depends on the region; set it where available.
  name: '${name}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Git hosts (GitHub, GitLab, …) and clusters must reach the webhooks; every request is authenticated by function key and signature.
  // checkov:skip=CKV_AZURE_17: Git hosts and Flux do not present client certificates; they sign their deliveries instead.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; the handler starts in milliseconds, well inside the hosts' timeouts. Set alwaysReady for hot paths if wanted.
  // checkov:skip=CKV_AZURE_213: the host's readiness probe is the custom handler's GET /; /api/health needs the API token, so it cannot be an anonymous health check.
  name: '${name}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        // The ledger: Table Storage through the app's identity.
        { name: 'FLUXTRAIL_TABLES', value: 'https://${storage.name}.table.${environment().suffixes.storage}' }
        // Messages: Service Bus through the app's identity.
        { name: 'FLUXTRAIL_SERVICEBUS', value: '${serviceBus.name}.servicebus.windows.net' }
        { name: 'FLUXTRAIL_SERVICEBUS_TOPIC', value: topic.name }
        { name: 'FLUXTRAIL_STALL_AFTER', value: stallAfter }
        { name: 'FLUXTRAIL_LOG_FORMAT', value: 'json' }
        // Secrets (FLUXTRAIL_GITHUB_SECRET, FLUXTRAIL_FLUX_HMAC_KEY, FLUXTRAIL_API_TOKEN, …)
        // are set after deployment, preferably as Key Vault references: see the README runbook.
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
}

resource tableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, app.id, roleTableDataContributor)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleTableDataContributor)
  }
}

resource blobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, app.id, roleBlobDataOwner)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleBlobDataOwner)
  }
}

resource senderRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: topic
  name: guid(topic.id, app.id, roleServiceBusDataSender)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleServiceBusDataSender)
  }
}

resource metricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: insights
  name: guid(insights.id, app.id, roleMonitoringMetricsPublisher)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleMonitoringMetricsPublisher)
  }
}

var base = 'https://${app.properties.defaultHostName}/api'

@description('Git host webhook URLs: append ?code=<GitHook function key>.')
output gitWebhookUrls object = {
  github: '${base}/hooks/git/github'
  gitlab: '${base}/hooks/git/gitlab'
  azuredevops: '${base}/hooks/git/azuredevops'
  bitbucket: '${base}/hooks/git/bitbucket'
  bitbucketServer: '${base}/hooks/git/bitbucket-server'
  gitea: '${base}/hooks/git/gitea'
  forgejo: '${base}/hooks/git/forgejo'
}

@description('Flux Provider address per cluster (send x-functions-key from the Provider Secret).')
output fluxProviderAddresses array = [for cluster in clusters: '${base}/hooks/flux/${cluster}']

output evidenceUrl string = '${base}/commits/{sha}'
output functionAppName string = app.name
output storageAccountName string = storage.name
output serviceBusNamespace string = serviceBus.name

// Everything the Iris pipeline runs on, in one resource group: storage (the Azure ML
// datastore), Key Vault, Log Analytics + Application Insights, Container Registry, the
// Azure ML workspace, the Batch account and DSVM pool, and the Data Factory with the
// pipeline from adf/. Deploy with `make deploy-infra`; the outputs become .env
// (bicep/env_writer.py). No output carries a key or a connection string.
targetScope = 'subscription'

@description('Azure region of every resource.')
param location string = deployment().location

// bicep/azure.sh refuses any other prefix before deploying: Bicep has no pattern check, and
// the Data Factory and Key Vault name rules (tests/bicep/test_templates.py) need it.
@description('Short name prefix (3-10 lowercase letters or digits, starting with a letter); resource names add a suffix unique to the subscription, prefix and region.')
@minLength(3)
@maxLength(10)
param prefix string = 'irisops'

@description('default, or recover: bring back the soft-deleted Key Vault of an earlier deployment (bicep/azure.sh decides).')
@allowed([
  'default'
  'recover'
])
param keyVaultCreateMode string = 'default'

@description('Resource group name; rg-<prefix> when empty.')
param resourceGroupName string = ''

// Private mode (docs/azure.md, "Private networking"): the datastore account, Key Vault,
// registry and workspace get private endpoints in the VNet and firewalls on Deny (the allowed
// IP excepted); Data Factory's Azure integration runtime stages the Custom activity into a
// separate staging account that holds only the trainer's files and the task logs.
@description('Private networking: VNet, private endpoints and DNS zones for blob, queue, Key Vault, the registry and the workspace; the pool and Azure ML compute in their subnets; a separate staging account for Data Factory (see docs/azure.md, "Private networking").')
param privateNetworking bool = false

@description('Your public IP address, allowed through the firewalls in private mode so set-up and staging work from your machine.')
param allowedIpAddress string = ''

@description('VM size of the Batch pool nodes.')
param poolVmSize string = 'Standard_D2s_v3'

@description('Most nodes the pool autoscales to (it scales to zero when idle).')
@minValue(1)
@maxValue(20)
param poolMaxNodes int = 1

@description('Batch pool id (BATCH_POOL_ID).')
param batchPoolId string = 'dsvm-pool'

@description('Blob container of the datastore (DATASTORE_CONTAINER).')
param datastoreContainer string = 'azureml'

@description('Azure ML datastore over that container (DATASTORE_NAME).')
param datastoreName string = 'irisdata'

@description('Folder where the trainer publishes MLflow runs (MODEL_PREFIX).')
param modelPrefix string = 'models'

@description('Folder the ADF Custom activity downloads (STAGING_PREFIX).')
param stagingPrefix string = 'adf/iris-training'

@description('Batch role of the factory identity: jobSubmitter (least privilege) or dataContributor.')
@allowed([
  'jobSubmitter'
  'dataContributor'
])
param factoryBatchRole string = 'jobSubmitter'

@description('Object id of the user or service principal deploying (gets blob data access to stage files and read logs); empty to skip.')
param deployerPrincipalId string = ''

@description('Type of that principal.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

@description('Tags applied to every resource.')
param tags object = {
  project: 'iris-batch-mlops'
}

var suffix = take(uniqueString(subscription().id, prefix, location), 6)
var compactPrefix = toLower(replace(prefix, '-', ''))
var names = {
  resourceGroup: empty(resourceGroupName) ? 'rg-${prefix}' : resourceGroupName
  storage: '${compactPrefix}st${suffix}'
  // Private mode only: the Custom activity's staging folder and task logs (no data, no models).
  stagingStorage: '${compactPrefix}stg${suffix}'
  keyVault: '${prefix}-kv-${suffix}'
  registry: '${compactPrefix}acr${suffix}'
  logAnalytics: '${prefix}-log-${suffix}'
  appInsights: '${prefix}-appi-${suffix}'
  workspace: '${prefix}-mlw-${suffix}'
  batch: '${compactPrefix}batch${suffix}'
  factory: '${prefix}-adf-${suffix}'
  poolIdentity: '${prefix}-pool-id'
  factoryIdentity: '${prefix}-adf-id'
  amlComputeIdentity: '${prefix}-aml-compute-id'
  network: '${prefix}-${suffix}'
  // Batch endpoint names are unique per region: prefix + suffix, at most 32 characters.
  batchEndpoint: take('${prefix}-iris-${suffix}', 32)
}
var storageKeySecretName = 'storage-account-key'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identities 'modules/identities.bicep' = {
  name: 'identities'
  scope: rg
  params: {
    location: location
    poolIdentityName: names.poolIdentity
    factoryIdentityName: names.factoryIdentity
    amlComputeIdentityName: names.amlComputeIdentity
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    tags: tags
  }
}

module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  scope: rg
  params: {
    location: location
    namePrefix: names.network
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    storageAccountName: names.storage
    datastoreContainer: datastoreContainer
    privateNetworking: privateNetworking
    allowedIpAddress: allowedIpAddress
    // The workspace reads the datastore as a resource instance (Azure ML's storage firewall guidance).
    trustedResourceId: '${rg.id}/providers/Microsoft.MachineLearningServices/workspaces/${names.workspace}'
    tags: tags
  }
}

// Private mode: the account Data Factory stages the Custom activity into with its Azure
// integration runtime (public endpoint, HTTPS, no anonymous access). It holds the staged
// trainer files and the `adfjobs` task logs only; models, sweep queues and results stay in
// the private datastore account. In the default mode the datastore account stages too.
module stagingStorage 'modules/storage.bicep' = if (privateNetworking) {
  name: 'staging-storage'
  scope: rg
  params: {
    location: location
    storageAccountName: names.stagingStorage
    datastoreContainer: datastoreContainer
    privateNetworking: false
    allowedIpAddress: ''
    trustedResourceId: ''
    tags: tags
  }
}

var stagingAccountName = privateNetworking ? stagingStorage.outputs.storageAccountName : storage.outputs.storageAccountName
var stagingBlobUrl = privateNetworking ? stagingStorage.outputs.blobEndpoint : storage.outputs.blobEndpoint

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    keyVaultName: names.keyVault
    createMode: keyVaultCreateMode
    privateNetworking: privateNetworking
    allowedIpAddress: allowedIpAddress
    tags: tags
  }
}

module storageKeySecret 'modules/storage-key-secret.bicep' = {
  name: 'storage-key-secret'
  scope: rg
  params: {
    // The key of the account the factory stages into (the staging account in private mode).
    storageAccountName: stagingAccountName
    keyVaultName: keyVault.outputs.keyVaultName
    secretName: storageKeySecretName
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    location: location
    registryName: names.registry
    privateNetworking: privateNetworking
    allowedIpAddress: allowedIpAddress
    tags: tags
  }
}

module privateEndpoints 'modules/private-endpoints.bicep' = if (privateNetworking) {
  name: 'private-endpoints'
  scope: rg
  params: {
    location: location
    namePrefix: names.network
    subnetId: privateNetworking ? network.outputs.privateEndpointsSubnetId : ''
    storageAccountId: storage.outputs.storageAccountId
    keyVaultId: keyVault.outputs.keyVaultId
    registryId: registry.outputs.registryId
    workspaceId: workspace.outputs.workspaceId
    blobDnsZoneId: privateNetworking ? network.outputs.blobDnsZoneId : ''
    queueDnsZoneId: privateNetworking ? network.outputs.queueDnsZoneId : ''
    vaultDnsZoneId: privateNetworking ? network.outputs.vaultDnsZoneId : ''
    registryDnsZoneId: privateNetworking ? network.outputs.registryDnsZoneId : ''
    workspaceDnsZoneIds: privateNetworking ? network.outputs.workspaceDnsZoneIds : []
    tags: tags
  }
}

module workspace 'modules/ml-workspace.bicep' = {
  name: 'ml-workspace'
  scope: rg
  params: {
    location: location
    workspaceName: names.workspace
    storageAccountId: storage.outputs.storageAccountId
    storageAccountName: storage.outputs.storageAccountName
    datastoreContainer: storage.outputs.containerName
    datastoreName: datastoreName
    keyVaultId: keyVault.outputs.keyVaultId
    appInsightsId: monitoring.outputs.appInsightsId
    registryId: registry.outputs.registryId
    tags: tags
  }
}

module batch 'modules/batch.bicep' = {
  name: 'batch'
  scope: rg
  params: {
    location: location
    batchAccountName: names.batch
    poolId: batchPoolId
    storageAccountId: storage.outputs.storageAccountId
    poolIdentityId: identities.outputs.poolIdentityId
    vmSize: poolVmSize
    maxNodes: poolMaxNodes
    subnetId: privateNetworking ? network.outputs.batchSubnetId : ''
    tags: tags
  }
}

module dataFactory 'modules/data-factory.bicep' = {
  name: 'data-factory'
  scope: rg
  params: {
    location: location
    factoryName: names.factory
    adfIdentityResourceId: identities.outputs.factoryIdentityId
    batchAccount: batch.outputs.batchAccountName
    batchAccountUrl: batch.outputs.batchAccountUrl
    batchPoolId: batch.outputs.poolId
    stagingStorageAccount: stagingAccountName
    azureStorageBlobUrl: storage.outputs.blobEndpoint
    azureStorageAccount: storage.outputs.storageAccountName
    azureKeyVault: keyVault.outputs.keyVaultName
    azureStorageSuffix: environment().suffixes.storage
    azureKeyVaultDnsSuffix: environment().suffixes.keyvaultDns
    datastoreContainer: storage.outputs.containerName
    datastoreName: workspace.outputs.datastoreName
    modelPrefix: modelPrefix
    stagingPrefix: stagingPrefix
    poolIdentityClientId: identities.outputs.poolIdentityClientId
    azureSubscriptionId: subscription().subscriptionId
    azureResourceGroup: rg.name
    azureLocation: location
    amlWorkspace: workspace.outputs.workspaceName
    batchEndpointName: names.batchEndpoint
    tags: tags
  }
  dependsOn: [
    storageKeySecret
  ]
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    storageAccountName: storage.outputs.storageAccountName
    datastoreContainer: storage.outputs.containerName
    keyVaultName: keyVault.outputs.keyVaultName
    storageKeySecretName: storageKeySecret.outputs.secretName
    batchAccountName: batch.outputs.batchAccountName
    factoryName: dataFactory.outputs.factoryName
    workspaceName: workspace.outputs.workspaceName
    poolIdentityName: names.poolIdentity
    factoryIdentityName: names.factoryIdentity
    amlComputeIdentityName: names.amlComputeIdentity
    registryName: registry.outputs.registryName
    factoryBatchRole: factoryBatchRole
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
  }
  dependsOn: [
    identities
  ]
}

module stagingRoles 'modules/staging-roles.bicep' = if (privateNetworking) {
  name: 'staging-roles'
  scope: rg
  params: {
    stagingStorageAccountName: stagingAccountName
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
  }
}

// ---- Outputs read by bicep/env_writer.py (one per .env key, named after it in camelCase).
output azureSubscriptionId string = subscription().subscriptionId
output azureResourceGroup string = rg.name
output azureLocation string = location
output azureStorageAccount string = storage.outputs.storageAccountName
output azureStorageBlobUrl string = storage.outputs.blobEndpoint
// Where `python -m adf` stages the trainer and reads task logs: the datastore account in the
// default mode, the staging account in private mode.
output stagingStorageAccount string = stagingAccountName
output stagingStorageBlobUrl string = stagingBlobUrl
output azureKeyVault string = keyVault.outputs.keyVaultName
// The cloud's host suffixes: the linked services of adf/ name the account and the vault with
// them, here (the dataFactory module) and when `python -m adf` publishes them from .env.
output azureStorageSuffix string = environment().suffixes.storage
output azureKeyVaultDnsSuffix string = environment().suffixes.keyvaultDns
output amlWorkspace string = workspace.outputs.workspaceName
output adfFactory string = dataFactory.outputs.factoryName
output adfPipeline string = dataFactory.outputs.pipelineName
output adfIdentityResourceId string = identities.outputs.factoryIdentityId
output batchAccount string = batch.outputs.batchAccountName
output batchAccountUrl string = batch.outputs.batchAccountUrl
output batchPoolId string = batch.outputs.poolId
output batchPoolMaxNodes string = string(poolMaxNodes)
output poolIdentityClientId string = identities.outputs.poolIdentityClientId
output datastoreName string = workspace.outputs.datastoreName
output datastoreContainer string = storage.outputs.containerName
output modelPrefix string = modelPrefix
output stagingPrefix string = stagingPrefix
output batchEndpointName string = names.batchEndpoint
output amlComputeIdentityId string = identities.outputs.amlComputeIdentityId
// Private mode: the subnet the deployer creates the scoring cluster in (empty: no VNet).
output amlComputeSubnetId string = privateNetworking ? network.outputs.amlComputeSubnetId : ''

// ---- Further ids for scripts and the portal (no keys).
output keyVaultUri string = keyVault.outputs.keyVaultUri
output containerRegistry string = registry.outputs.registryName
output appInsights string = monitoring.outputs.appInsightsName
output amlWorkspaceId string = workspace.outputs.workspaceId
output batchAccountId string = batch.outputs.batchAccountId
output adfFactoryId string = dataFactory.outputs.factoryId
output poolIdentityId string = identities.outputs.poolIdentityId
// The scoring cluster's identity (its resource id is AML_COMPUTE_IDENTITY_ID above).
output amlComputeIdentityClientId string = identities.outputs.amlComputeIdentityClientId

// Data Factory with the training pipeline. The credential, linked services and pipeline
// are adf/*.json, loaded as text with every __KEY__ placeholder replaced by the deployed
// value (KEY is the .env key), so adf/ stays their only definition.

@description('Azure region.')
param location string

@description('Data Factory name.')
param factoryName string

@description('Resource id of the user-assigned identity the Batch linked service uses (ADF_IDENTITY_RESOURCE_ID).')
param adfIdentityResourceId string

@description('Batch account name (BATCH_ACCOUNT).')
param batchAccount string

@description('Batch account URL (BATCH_ACCOUNT_URL).')
param batchAccountUrl string

@description('Batch pool id (BATCH_POOL_ID).')
param batchPoolId string

@description('Storage account the Custom activity is staged into (STAGING_STORAGE_ACCOUNT): the datastore account, or the staging account in private mode.')
param stagingStorageAccount string

@description('Blob endpoint (AZURE_STORAGE_BLOB_URL).')
param azureStorageBlobUrl string

@description('Datastore storage account name (AZURE_STORAGE_ACCOUNT): the storage event trigger listens to it.')
param azureStorageAccount string

@description('Key Vault name (AZURE_KEY_VAULT).')
param azureKeyVault string

@description('Storage host suffix of the cloud, environment().suffixes.storage (AZURE_STORAGE_SUFFIX).')
param azureStorageSuffix string

@description('Key Vault host suffix of the cloud, environment().suffixes.keyvaultDns (AZURE_KEY_VAULT_DNS_SUFFIX).')
param azureKeyVaultDnsSuffix string

@description('Blob container of the datastore (DATASTORE_CONTAINER).')
param datastoreContainer string

@description('Azure ML datastore over the container (DATASTORE_NAME).')
param datastoreName string

@description('Folder where the trainer publishes MLflow runs (MODEL_PREFIX).')
param modelPrefix string

@description('Folder the Custom activity downloads (STAGING_PREFIX).')
param stagingPrefix string

@description('Client id of the pool identity (POOL_IDENTITY_CLIENT_ID).')
param poolIdentityClientId string

@description('Subscription id (AZURE_SUBSCRIPTION_ID).')
param azureSubscriptionId string

@description('Resource group name (AZURE_RESOURCE_GROUP).')
param azureResourceGroup string

@description('Azure region (AZURE_LOCATION): the batch endpoint\'s invocation URI and run history host name it.')
param azureLocation string

@description('Azure ML workspace name (AML_WORKSPACE).')
param amlWorkspace string

@description('Batch endpoint name (BATCH_ENDPOINT_NAME).')
param batchEndpointName string

@description('Tags applied to every resource.')
param tags object

var credentialJson = json(replace(loadTextContent('../../adf/credentials/BatchIdentityCredential.json'), '__ADF_IDENTITY_RESOURCE_ID__', adfIdentityResourceId))

var keyVaultLinkedServiceJson = json(replace(replace(loadTextContent('../../adf/linkedServices/KeyVaultLinkedService.json'), '__AZURE_KEY_VAULT__', azureKeyVault), '__AZURE_KEY_VAULT_DNS_SUFFIX__', azureKeyVaultDnsSuffix))

var storageLinkedServiceJson = json(replace(replace(loadTextContent('../../adf/linkedServices/AzureBlobStorageLinkedService.json'), '__STAGING_STORAGE_ACCOUNT__', stagingStorageAccount), '__AZURE_STORAGE_SUFFIX__', azureStorageSuffix))

var batchLinkedServiceJson = json(replace(replace(replace(loadTextContent('../../adf/linkedServices/AzureBatchLinkedService.json'), '__BATCH_ACCOUNT__', batchAccount), '__BATCH_ACCOUNT_URL__', batchAccountUrl), '__BATCH_POOL_ID__', batchPoolId))

// __DATASTORE_NAME__ feeds the trainer's --datastore-name (the model URI in outputs.json).
var pipelineJson = json(replace(replace(replace(replace(replace(replace(loadTextContent('../../adf/pipeline.json'), '__DATASTORE_CONTAINER__', datastoreContainer), '__MODEL_PREFIX__', modelPrefix), '__STAGING_PREFIX__', stagingPrefix), '__AZURE_STORAGE_BLOB_URL__', azureStorageBlobUrl), '__POOL_IDENTITY_CLIENT_ID__', poolIdentityClientId), '__DATASTORE_NAME__', datastoreName))

// The sweep: a ForEach of runners (trainer/node_runner.py) over a storage queue; same placeholders.
var sweepPipelineJson = json(replace(replace(replace(replace(replace(replace(loadTextContent('../../adf/sweep-pipeline.json'), '__DATASTORE_CONTAINER__', datastoreContainer), '__MODEL_PREFIX__', modelPrefix), '__STAGING_PREFIX__', stagingPrefix), '__AZURE_STORAGE_BLOB_URL__', azureStorageBlobUrl), '__POOL_IDENTITY_CLIENT_ID__', poolIdentityClientId), '__DATASTORE_NAME__', datastoreName))

// Scoring: a Web activity invokes the batch endpoint, an Until loop follows the job
// (adf/score-pipeline.json); the Azure ML resources are named by these placeholders.
var scorePipelineJson = json(replace(replace(replace(replace(replace(replace(loadTextContent('../../adf/score-pipeline.json'), '__BATCH_ENDPOINT_NAME__', batchEndpointName), '__AZURE_SUBSCRIPTION_ID__', azureSubscriptionId), '__AZURE_RESOURCE_GROUP__', azureResourceGroup), '__AML_WORKSPACE__', amlWorkspace), '__AZURE_LOCATION__', azureLocation), '__DATASTORE_NAME__', datastoreName))

// register-and-deploy on the pool (a Custom activity running the staged deployer archive with
// the pool's identity), and the whole loop: train-iris, deploy-iris, score-iris on the sample.
var deployPipelineJson = json(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(loadTextContent('../../adf/deploy-pipeline.json'), '__DATASTORE_CONTAINER__', datastoreContainer), '__MODEL_PREFIX__', modelPrefix), '__STAGING_PREFIX__', stagingPrefix), '__AZURE_STORAGE_BLOB_URL__', azureStorageBlobUrl), '__POOL_IDENTITY_CLIENT_ID__', poolIdentityClientId), '__DATASTORE_NAME__', datastoreName), '__BATCH_ENDPOINT_NAME__', batchEndpointName), '__AZURE_SUBSCRIPTION_ID__', azureSubscriptionId), '__AZURE_RESOURCE_GROUP__', azureResourceGroup), '__AML_WORKSPACE__', amlWorkspace), '__AZURE_LOCATION__', azureLocation))

var trainAndDeployPipelineJson = json(replace(loadTextContent('../../adf/train-and-deploy-pipeline.json'), '__STAGING_PREFIX__', stagingPrefix))

// Triggers of score-iris (adf/triggers/): a blob created under incoming/ and every night.
// Created stopped (a trigger runs only once started: `python -m adf triggers start NAME`).
var scoreOnUploadTriggerJson = json(replace(replace(replace(replace(loadTextContent('../../adf/triggers/score-iris-on-upload.json'), '__DATASTORE_CONTAINER__', datastoreContainer), '__AZURE_SUBSCRIPTION_ID__', azureSubscriptionId), '__AZURE_RESOURCE_GROUP__', azureResourceGroup), '__AZURE_STORAGE_ACCOUNT__', azureStorageAccount))

var scoreNightlyTriggerJson = json(loadTextContent('../../adf/triggers/score-iris-nightly.json'))

resource factory 'Microsoft.DataFactory/factories@2018-06-01' = {
  // checkov:skip=CKV_AZURE_103: Definitions come from adf/ in this repository through this template; a factory Git integration would be a second source of truth.
  // checkov:skip=CKV_AZURE_104: The Azure integration runtime needs public network access to reach Batch and storage; the pipeline runs no inbound endpoint.
  name: factoryName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned,UserAssigned'
    userAssignedIdentities: {
      '${adfIdentityResourceId}': {}
    }
  }
  properties: {
    publicNetworkAccess: 'Enabled'
  }
}

resource credential 'Microsoft.DataFactory/factories/credentials@2018-06-01' = {
  parent: factory
  name: credentialJson.name
  properties: credentialJson.properties
}

resource keyVaultLinkedService 'Microsoft.DataFactory/factories/linkedservices@2018-06-01' = {
  parent: factory
  name: keyVaultLinkedServiceJson.name
  properties: keyVaultLinkedServiceJson.properties
}

resource storageLinkedService 'Microsoft.DataFactory/factories/linkedservices@2018-06-01' = {
  parent: factory
  name: storageLinkedServiceJson.name
  properties: storageLinkedServiceJson.properties
  dependsOn: [
    keyVaultLinkedService
  ]
}

resource batchLinkedService 'Microsoft.DataFactory/factories/linkedservices@2018-06-01' = {
  parent: factory
  name: batchLinkedServiceJson.name
  properties: batchLinkedServiceJson.properties
  dependsOn: [
    storageLinkedService
    credential
  ]
}

resource pipeline 'Microsoft.DataFactory/factories/pipelines@2018-06-01' = {
  parent: factory
  name: pipelineJson.name
  properties: pipelineJson.properties
  dependsOn: [
    batchLinkedService
    storageLinkedService
  ]
}

resource sweepPipeline 'Microsoft.DataFactory/factories/pipelines@2018-06-01' = {
  parent: factory
  name: sweepPipelineJson.name
  properties: sweepPipelineJson.properties
  dependsOn: [
    batchLinkedService
    storageLinkedService
  ]
}

resource scorePipeline 'Microsoft.DataFactory/factories/pipelines@2018-06-01' = {
  parent: factory
  name: scorePipelineJson.name
  properties: scorePipelineJson.properties
}

resource deployPipeline 'Microsoft.DataFactory/factories/pipelines@2018-06-01' = {
  parent: factory
  name: deployPipelineJson.name
  properties: deployPipelineJson.properties
  dependsOn: [
    batchLinkedService
    storageLinkedService
  ]
}

// Data Factory refuses an Execute Pipeline of a pipeline it does not have: those first.
resource trainAndDeployPipeline 'Microsoft.DataFactory/factories/pipelines@2018-06-01' = {
  parent: factory
  name: trainAndDeployPipelineJson.name
  properties: trainAndDeployPipelineJson.properties
  dependsOn: [
    pipeline
    deployPipeline
    scorePipeline
  ]
}

resource scoreOnUploadTrigger 'Microsoft.DataFactory/factories/triggers@2018-06-01' = {
  parent: factory
  name: scoreOnUploadTriggerJson.name
  properties: scoreOnUploadTriggerJson.properties
  dependsOn: [
    scorePipeline
  ]
}

resource scoreNightlyTrigger 'Microsoft.DataFactory/factories/triggers@2018-06-01' = {
  parent: factory
  name: scoreNightlyTriggerJson.name
  properties: scoreNightlyTriggerJson.properties
  dependsOn: [
    scorePipeline
  ]
}

output factoryName string = factory.name
output factoryId string = factory.id
output factoryPrincipalId string = factory.identity.principalId
output pipelineName string = pipeline.name
output sweepPipelineName string = sweepPipeline.name

// Role assignments, least privilege, each scoped to the one resource it needs. Names are
// deterministic: guid(scope, identity resource, role), all known when the deployment starts.

@description('Storage account name.')
param storageAccountName string

@description('Blob container of the datastore.')
param datastoreContainer string

@description('Key Vault name.')
param keyVaultName string

@description('Name of the secret holding the storage account key.')
param storageKeySecretName string

@description('Batch account name.')
param batchAccountName string

@description('Data Factory name.')
param factoryName string

@description('Azure ML workspace name.')
param workspaceName string

@description('Name of the pool nodes\' user-assigned identity.')
param poolIdentityName string

@description('Name of the factory\'s user-assigned identity (Batch linked service).')
param factoryIdentityName string

@description('Name of the Azure ML compute clusters\' user-assigned identity.')
param amlComputeIdentityName string

@description('Container registry name.')
param registryName string

@description('Batch role of the factory identity: jobSubmitter (least privilege) or dataContributor (if your tenant\'s ADF needs pool reads).')
@allowed([
  'jobSubmitter'
  'dataContributor'
])
param factoryBatchRole string

@description('Object id of the user or service principal running the deployment (stages files, reads logs and models); empty to skip.')
param deployerPrincipalId string

@description('Type of that principal.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string

// Built-in role definition ids (Microsoft's built-in roles list; tests/fixtures/builtin_roles.json).
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  // Storage Queue Data Contributor: sweep runners receive, renew (update), delete and send
  // messages; Message Processor cannot update or send, Sender cannot receive.
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  // Azure Batch Job Submitter: create and manage jobs and tasks, nothing on pools or the account.
  jobSubmitter: '48e5e92e-a480-4e71-aa9c-2778f4c13781'
  // Azure Batch Data Contributor: also manages pools; the fallback if job submission needs pool reads.
  dataContributor: '6aaa78f1-f7de-44ca-8722-c64a23943cae'
  // Azure Batch Account Reader: view pools, nodes, jobs and tasks (python -m adf shows pool state and task stderr).
  batchAccountReader: '11076f67-66f6-4be0-8f6b-f0609fd05cc9'
  // AzureML Data Scientist: everything in the workspace except creating or deleting compute.
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
  // AzureML Compute Operator: create, update and delete compute (the scoring cluster).
  azureMLComputeOperator: 'e503ece1-11d0-4e8e-8e2c-7a6c3bf38815'
  // Managed Identity Operator: read and assign a user-assigned identity (its */assign/action),
  // which creating a cluster with that identity needs and neither AzureML role grants.
  managedIdentityOperator: 'f1a07417-d97a-45cb-824c-7a7467783830'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: datastoreContainer
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource storageKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: storageKeySecretName
}

resource batchAccount 'Microsoft.Batch/batchAccounts@2024-07-01' existing = {
  name: batchAccountName
}

resource factory 'Microsoft.DataFactory/factories@2018-06-01' existing = {
  name: factoryName
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource poolIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: poolIdentityName
}

resource factoryIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: factoryIdentityName
}

resource amlComputeIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: amlComputeIdentityName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

// The trainer on the pool writes the MLflow model blobs into the datastore container.
resource poolWritesModels 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(container.id, poolIdentity.id, roles.storageBlobDataContributor)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: poolIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Batch pool nodes write MLflow model blobs.'
  }
}

// Sweep runners on the pool take grid lines from the sweep's queues (created per sweep, so
// the account's queue service is the scope) and post results and failures.
resource poolProcessesQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, poolIdentity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: poolIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Batch pool nodes run sweep lines from storage queues.'
  }
}

// The factory's Batch linked service (its user-assigned identity) submits the Custom activity's job.
resource factoryRunsBatchJobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(batchAccount.id, factoryIdentity.id, roles[factoryBatchRole])
  scope: batchAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles[factoryBatchRole])
    principalId: factoryIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Data Factory runs the training job on the Batch pool.'
  }
}

// The factory reads the staging folder (trainer + data) in the datastore container.
resource factoryReadsStaging 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(container.id, factory.id, roles.storageBlobDataReader)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: factory.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Data Factory reads the staging folder.'
  }
}

// The factory's Key Vault linked service reads the one secret ADF's Batch staging needs.
resource factoryReadsStorageKeySecret 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageKeySecret.id, factory.id, roles.keyVaultSecretsUser)
  scope: storageKeySecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: factory.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Data Factory reads the staging storage key secret.'
  }
}

// The scoring pipeline (adf/score-pipeline.json) invokes the batch endpoint and reads its
// jobs with the factory's system-assigned identity (Web activity, MSI). Invoking needs: read
// batch endpoints/deployments, create jobs, create experiments/runs, read and write data
// stores, list datastore secrets ("Authorization on batch endpoints", MicrosoftDocs
// azure-docs articles/machine-learning/how-to-authenticate-batch-endpoint.md). Of the
// built-in roles, AzureML Data Scientist is the narrowest that grants them (everything in the
// workspace except creating or deleting compute and changing the workspace itself).
resource factoryInvokesBatchEndpoints 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, factory.id, roles.azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: factory.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Data Factory invokes the batch endpoint and reads its jobs (score-iris).'
  }
}

// The Azure ML workspace reads the datastore (identity-based datastore, no stored credential).
resource workspaceReadsDatastore 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(container.id, workspace.id, roles.storageBlobDataReader)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: workspace.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Azure ML workspace reads the datastore.'
  }
}

// Batch auto-storage authenticates with the account's managed identity.
resource batchUsesAutoStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, batchAccount.id, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: batchAccount.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Batch account auto-storage (application packages, task output).'
  }
}

// Azure ML compute (the batch endpoint's cluster) reads the datastore and writes scoring output to
// the workspace's default container, whose name Azure ML picks at creation: account scope.
resource amlComputeUsesStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, amlComputeIdentity.id, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: amlComputeIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Azure ML compute reads the datastore and writes scoring output.'
  }
}

// Azure ML compute pulls the environment images Azure ML builds into the registry.
resource amlComputePullsImages 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, amlComputeIdentity.id, roles.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: amlComputeIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Azure ML compute pulls environment images.'
  }
}

// Whoever deploys stages the trainer, reads ADF's task logs and the published models with Entra ID.
resource deployerUsesStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(storage.id, deployerPrincipalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deploying user or pipeline stages files and reads logs and models.'
  }
}

// Whoever deploys starts sweeps: creates their queues, queues the lines, reads the results.
resource deployerUsesQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(storage.id, deployerPrincipalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deploying user or pipeline starts sweeps and reads their queues.'
  }
}

// Whoever deploys sees the pool's state and a failed task's stderr (python -m adf status/logs).
resource deployerReadsBatch 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(batchAccount.id, deployerPrincipalId, roles.batchAccountReader)
  scope: batchAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.batchAccountReader)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deploying user or pipeline reads pool state and task output.'
  }
}

// Whoever deploys runs the deployer CLI: models, endpoints, deployments and jobs (Data Scientist)
// and the scoring cluster (Compute Operator; Data Scientist cannot write or delete compute).
resource deployerUsesWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(workspace.id, deployerPrincipalId, roles.azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deploying user or pipeline registers models and runs batch endpoints.'
  }
}

resource deployerManagesCompute 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(workspace.id, deployerPrincipalId, roles.azureMLComputeOperator)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLComputeOperator)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deploying user or pipeline creates and deletes the scoring cluster.'
  }
}

// Creating the scoring cluster with the compute identity assigns that identity: Azure ML
// requires write on the compute and the Managed Identity Operator role (MicrosoftDocs
// azure-docs, articles/machine-learning/how-to-assign-roles.md, "User-assigned managed
// identity with Azure Machine Learning compute cluster"). Scoped to that one identity.
resource deployerAssignsComputeIdentity 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(amlComputeIdentity.id, deployerPrincipalId, roles.managedIdentityOperator)
  scope: amlComputeIdentity
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.managedIdentityOperator)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deploying user or pipeline gives the scoring cluster its identity.'
  }
}

// The deploy-iris Custom activity runs `python -m deployer register-and-deploy` on the pool
// with the pool's identity: the roles the deploying user has for it, on the same scopes
// (models, endpoints, deployments and jobs; the scoring cluster; assigning the compute
// identity to that cluster). It reads the models and uploads the smoke input in container
// `azureml` (poolWritesModels); the smoke job's predictions are downloaded through the
// workspace's default datastore, whose credentials Data Scientist may list.
resource poolUsesWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, poolIdentity.id, roles.azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: poolIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Batch pool nodes register models and roll out batch deployments (deploy-iris).'
  }
}

resource poolManagesCompute 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, poolIdentity.id, roles.azureMLComputeOperator)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLComputeOperator)
    principalId: poolIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Batch pool nodes create the scoring cluster (deploy-iris).'
  }
}

resource poolAssignsComputeIdentity 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(amlComputeIdentity.id, poolIdentity.id, roles.managedIdentityOperator)
  scope: amlComputeIdentity
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.managedIdentityOperator)
    principalId: poolIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Batch pool nodes give the scoring cluster its identity (deploy-iris).'
  }
}

// Private mode: whoever deploys stages the trainer into the staging account and reads the
// task logs there (`python -m adf`), as roles.bicep grants on the datastore account in the
// default mode. Data Factory uses the account key from Key Vault (ADF's Batch staging needs it).

@description('Staging storage account name.')
param stagingStorageAccountName string

@description('Object id of the user or service principal running the deployment; empty to skip.')
param deployerPrincipalId string

@description('Type of that principal.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string

// Storage Blob Data Contributor (Microsoft's built-in roles list; tests/fixtures/builtin_roles.json).
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource staging 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: stagingStorageAccountName
}

resource deployerStages 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(staging.id, deployerPrincipalId, storageBlobDataContributor)
  scope: staging
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deploying user or pipeline stages the trainer and reads the task logs.'
  }
}

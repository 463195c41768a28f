// Azure ML workspace (system-assigned identity) over the storage account, Key Vault,
// Application Insights and registry, plus an identity-based datastore over the container
// the trainer publishes to (no credential stored in the workspace).

@description('Azure region.')
param location string

@description('Azure ML workspace name.')
param workspaceName string

@description('Resource id of the storage account.')
param storageAccountId string

@description('Storage account name (for the datastore).')
param storageAccountName string

@description('Blob container of the datastore.')
param datastoreContainer string

@description('Name of the datastore over that container.')
param datastoreName string

@description('Resource id of the Key Vault.')
param keyVaultId string

@description('Resource id of Application Insights.')
param appInsightsId string

@description('Resource id of the container registry.')
param registryId string

@description('Tags applied to every resource.')
param tags object

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' = {
  // checkov:skip=CKV_AZURE_243: The workspace stays reachable from public networks (Entra ID only) so the deployer CLI and the batch endpoint work from a laptop; privateNetworking=true restricts the datastore, vault and registry it uses.
  name: workspaceName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  properties: {
    friendlyName: workspaceName
    storageAccount: storageAccountId
    keyVault: keyVaultId
    applicationInsights: appInsightsId
    containerRegistry: registryId
    publicNetworkAccess: 'Enabled'
    hbiWorkspace: false
    v1LegacyMode: false
  }
}

resource datastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-10-01' = {
  parent: workspace
  name: datastoreName
  properties: {
    datastoreType: 'AzureBlob'
    description: 'The container the trainer publishes MLflow models to; read with Entra ID identities (no stored credential).'
    accountName: storageAccountName
    containerName: datastoreContainer
    endpoint: environment().suffixes.storage
    protocol: 'https'
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    credentials: {
      credentialsType: 'None'
    }
  }
}

output workspaceId string = workspace.id
output workspaceName string = workspace.name
output workspacePrincipalId string = workspace.identity.principalId
output datastoreName string = datastore.name

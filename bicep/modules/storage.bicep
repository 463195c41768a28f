// Storage account of the Azure ML datastore: the trainer's staging folder, the published
// MLflow models, and ADF's `adfjobs` log container.

@description('Azure region.')
param location string

@description('Storage account name.')
param storageAccountName string

@description('Blob container of the datastore.')
param datastoreContainer string

@description('Deny public network access except the allowed IP and the trusted resource (private endpoints serve the VNet).')
param privateNetworking bool

@description('Public IP address allowed through the firewall in private mode (for set-up from your machine).')
param allowedIpAddress string

@description('Resource id of the one resource instance allowed through the firewall in private mode (the Azure ML workspace); empty for none.')
param trustedResourceId string

@description('Tags applied to every resource.')
param tags object

var ipRules = empty(allowedIpAddress) ? [] : [
  {
    value: allowedIpAddress
    action: 'Allow'
  }
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206: LRS is enough for a training datastore that can be rebuilt from the repo; geo-replication doubles the cost.
  // checkov:skip=CKV_AZURE_59: Public network access is required by ADF's Azure IR and the Batch nodes in the default mode and on the staging account of private mode (trainer files and task logs only); privateNetworking=true denies it on the datastore except the allowed IP, trusted services and the workspace.
  // checkov:skip=CKV_AZURE_35: The default mode allows public networks (HTTPS and TLS 1.2 only, no anonymous blob access); privateNetworking=true sets the default action to Deny.
  // checkov:skip=CKV_AZURE_43: The name is a parameter checkov cannot resolve; main.bicep builds it from lowercase letters and digits, at most 24 characters (tests/bicep/test_templates.py checks it).
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: true
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
      ipRules: privateNetworking ? ipRules : []
      virtualNetworkRules: []
      resourceAccessRules: (privateNetworking && !empty(trustedResourceId)) ? [
        {
          tenantId: subscription().tenantId
          resourceId: trustedResourceId
        }
      ] : []
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
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
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: datastoreContainer
  properties: {
    publicAccess: 'None'
  }
}

// ADF writes the Custom activity's stdout/stderr here; created up front so its access is private.
resource adfJobsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'adfjobs'
  properties: {
    publicAccess: 'None'
  }
}

output storageAccountId string = storage.id
output storageAccountName string = storage.name
// Without the trailing slash of primaryEndpoints.blob, as the CLIs and the trainer expect.
output blobEndpoint string = 'https://${storage.name}.blob.${environment().suffixes.storage}'
output containerName string = container.name

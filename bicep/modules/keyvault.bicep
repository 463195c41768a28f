// Key Vault (RBAC authorization, soft delete, purge protection). It holds one secret, the
// storage account key ADF's Batch staging needs (written by storage-key-secret.bicep).

@description('Azure region.')
param location string

@description('Key Vault name.')
param keyVaultName string

@description('default, or recover to bring back the soft-deleted vault of the same name (purge protection keeps it for the retention days after `make destroy`).')
@allowed([
  'default'
  'recover'
])
param createMode string = 'default'

@description('Deny public network access except the allowed IP and trusted services (private endpoints serve the VNet).')
param privateNetworking bool

@description('Public IP address allowed through the firewall in private mode.')
param allowedIpAddress string

@description('Tags applied to every resource.')
param tags object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: The default mode allows public networks (Entra ID RBAC only); privateNetworking=true sets the default action to Deny.
  // checkov:skip=CKV_AZURE_189: The default mode keeps public access for ADF's Azure IR; privateNetworking=true denies it except the allowed IP and trusted services.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    createMode: createMode
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
      ipRules: (privateNetworking && !empty(allowedIpAddress)) ? [
        {
          value: allowedIpAddress
        }
      ] : []
      virtualNetworkRules: []
    }
  }
}

output keyVaultId string = vault.id
output keyVaultName string = vault.name
output keyVaultUri string = vault.properties.vaultUri

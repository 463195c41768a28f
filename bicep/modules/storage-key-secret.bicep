// Writes the storage account key into Key Vault for ADF's Batch staging linked service
// (account-key auth is the only mode it supports). The key is read with listKeys() inside
// the deployment: it never appears in a parameter, an output or a log.

@description('Storage account whose key is stored.')
param storageAccountName string

@description('Key Vault that receives the secret.')
param keyVaultName string

@description('Name of the secret (referenced by adf/linkedServices/AzureBlobStorageLinkedService.json).')
param secretName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: The account key is rotated by redeploying; an expiry date would stop the pipeline without warning when it passes.
  parent: vault
  name: secretName
  properties: {
    contentType: 'storage-account-key'
    value: storage.listKeys().keys[0].value
    attributes: {
      enabled: true
    }
  }
}

output secretName string = secret.name

# Writes the storage account key into Key Vault for ADF's Batch staging linked service
# (account-key auth is the only mode it supports). The key is read with ARM's listKeys
# action: it never appears in a variable, an output or a log (the state holds it, as it holds
# the account's own key attributes: docs/azure.md, "Terraform state").
#
# azapi, because azurerm lacks a control-plane secret: azurerm_key_vault_secret writes through
# the vault's data plane, which needs a data-plane role for whoever deploys and, in private
# mode, network access to the vault. Microsoft.KeyVault/vaults/secrets through Resource
# Manager (as bicep/modules/storage-key-secret.bicep) needs neither. The value goes in
# sensitive_body, which azapi sends but does not keep in the state.

variable "storage_account_id" {
  description = "Storage account whose key is stored."
  type        = string
}

variable "key_vault_id" {
  description = "Key Vault that receives the secret."
  type        = string
}

variable "secret_name" {
  description = "Name of the secret (referenced by adf/linkedServices/AzureBlobStorageLinkedService.json)."
  type        = string
}

resource "azapi_resource_action" "storage_keys" {
  type                             = "Microsoft.Storage/storageAccounts@2023-05-01"
  resource_id                      = var.storage_account_id
  action                           = "listKeys"
  method                           = "POST"
  sensitive_response_export_values = ["keys"]
}

resource "azapi_resource" "secret" {
  type      = "Microsoft.KeyVault/vaults/secrets@2023-07-01"
  name      = var.secret_name
  parent_id = var.key_vault_id
  body = {
    properties = {
      contentType = "storage-account-key"
      attributes = {
        enabled = true
      }
    }
  }
  sensitive_body = {
    properties = {
      value = azapi_resource_action.storage_keys.sensitive_output.keys[0].value
    }
  }
}

output "secret_name" { value = azapi_resource.secret.name }
output "secret_id" { value = azapi_resource.secret.id }

# Azure ML workspace (system-assigned identity) over the storage account, Key Vault,
# Application Insights and registry, plus an identity-based datastore over the container
# the trainer publishes to (no credential stored in the workspace).

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "workspace_name" {
  description = "Azure ML workspace name."
  type        = string
}

variable "storage_account_id" {
  description = "Resource id of the storage account."
  type        = string
}

variable "container_id" {
  description = "Resource id of the datastore's blob container."
  type        = string
}

variable "datastore_name" {
  description = "Name of the datastore over that container."
  type        = string
}

variable "key_vault_id" {
  description = "Resource id of the Key Vault."
  type        = string
}

variable "app_insights_id" {
  description = "Resource id of Application Insights."
  type        = string
}

variable "registry_id" {
  description = "Resource id of the container registry."
  type        = string
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
}

resource "azurerm_machine_learning_workspace" "workspace" {
  # checkov:skip=CKV_AZURE_144: The workspace stays reachable from public networks (Entra ID only) so the deployer CLI and the batch endpoint work from a laptop; private_networking = true restricts the datastore, vault and registry it uses.
  # checkov:skip=CKV2_AZURE_49: The same: public network access is kept for the deployer CLI and the batch endpoint (Entra ID only); private_networking = true restricts what the workspace reaches.
  name                          = var.workspace_name
  resource_group_name           = var.resource_group_name
  location                      = var.location
  friendly_name                 = var.workspace_name
  sku_name                      = "Basic"
  storage_account_id            = var.storage_account_id
  key_vault_id                  = var.key_vault_id
  application_insights_id       = var.app_insights_id
  container_registry_id         = var.registry_id
  public_network_access_enabled = true
  high_business_impact          = false
  v1_legacy_mode_enabled        = false
  tags                          = var.tags

  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_machine_learning_datastore_blobstorage" "datastore" {
  name                       = var.datastore_name
  workspace_id               = azurerm_machine_learning_workspace.workspace.id
  storage_container_id       = var.container_id
  description                = "The container the trainer publishes MLflow models to; read with Entra ID identities (no stored credential)."
  service_data_auth_identity = "WorkspaceSystemAssignedIdentity"
}

output "workspace_id" { value = azurerm_machine_learning_workspace.workspace.id }
output "workspace_name" { value = azurerm_machine_learning_workspace.workspace.name }
output "workspace_principal_id" { value = azurerm_machine_learning_workspace.workspace.identity[0].principal_id }
output "datastore_name" { value = azurerm_machine_learning_datastore_blobstorage.datastore.name }

# User-assigned identities: one for the Batch pool nodes (writes model blobs), one for the
# Data Factory's Batch linked service (submits jobs), one for Azure ML compute clusters
# (reads the datastore, writes scoring output). Their roles are in modules/roles.

variable "resource_group_name" {
  description = "Resource group of the identities."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "pool_identity_name" {
  description = "Name of the Batch pool identity."
  type        = string
}

variable "factory_identity_name" {
  description = "Name of the Data Factory identity used by the Batch linked service."
  type        = string
}

variable "aml_compute_identity_name" {
  description = "Name of the identity for Azure ML compute clusters."
  type        = string
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
}

resource "azurerm_user_assigned_identity" "pool_identity" {
  name                = var.pool_identity_name
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

resource "azurerm_user_assigned_identity" "factory_identity" {
  name                = var.factory_identity_name
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

resource "azurerm_user_assigned_identity" "aml_compute_identity" {
  name                = var.aml_compute_identity_name
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

output "pool_identity_id" { value = azurerm_user_assigned_identity.pool_identity.id }
output "pool_identity_client_id" { value = azurerm_user_assigned_identity.pool_identity.client_id }
output "pool_identity_principal_id" { value = azurerm_user_assigned_identity.pool_identity.principal_id }
output "factory_identity_id" { value = azurerm_user_assigned_identity.factory_identity.id }
output "factory_identity_principal_id" { value = azurerm_user_assigned_identity.factory_identity.principal_id }
output "aml_compute_identity_id" { value = azurerm_user_assigned_identity.aml_compute_identity.id }
output "aml_compute_identity_client_id" { value = azurerm_user_assigned_identity.aml_compute_identity.client_id }
output "aml_compute_identity_principal_id" { value = azurerm_user_assigned_identity.aml_compute_identity.principal_id }

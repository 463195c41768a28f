# Private endpoints (with DNS zone groups) in the private-endpoints subnet (private_networking
# = true): the datastore account's blob and queue services (the trainer, the sweep runners and
# the scoring cluster), Key Vault, the container registry, and the Azure ML workspace (Azure ML
# requires it for compute without public IP addresses). Each zone is linked to the VNet in
# modules/network, so the services' public host names resolve to these private addresses there.

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "name_prefix" {
  description = "Name prefix of the endpoints."
  type        = string
}

variable "subnet_id" {
  description = "Subnet of the private endpoints."
  type        = string
}

variable "storage_account_id" {
  description = "Resource id of the datastore storage account."
  type        = string
}

variable "key_vault_id" {
  description = "Resource id of the Key Vault."
  type        = string
}

variable "registry_id" {
  description = "Resource id of the container registry."
  type        = string
}

variable "workspace_id" {
  description = "Resource id of the Azure ML workspace."
  type        = string
}

variable "blob_dns_zone_id" {
  description = "Private DNS zone of blob endpoints."
  type        = string
}

variable "queue_dns_zone_id" {
  description = "Private DNS zone of queue endpoints."
  type        = string
}

variable "vault_dns_zone_id" {
  description = "Private DNS zone of Key Vault."
  type        = string
}

variable "registry_dns_zone_id" {
  description = "Private DNS zone of the registry."
  type        = string
}

variable "workspace_dns_zone_ids" {
  description = "Private DNS zones of the workspace (api and notebooks)."
  type        = list(string)
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
}

locals {
  # group_id: the private-link sub-resource (Microsoft's "What is a private endpoint?", Private-link resource).
  endpoints = {
    blob      = { resource_id = var.storage_account_id, group_id = "blob", zone_ids = [var.blob_dns_zone_id] }
    queue     = { resource_id = var.storage_account_id, group_id = "queue", zone_ids = [var.queue_dns_zone_id] }
    vault     = { resource_id = var.key_vault_id, group_id = "vault", zone_ids = [var.vault_dns_zone_id] }
    registry  = { resource_id = var.registry_id, group_id = "registry", zone_ids = [var.registry_dns_zone_id] }
    workspace = { resource_id = var.workspace_id, group_id = "amlworkspace", zone_ids = var.workspace_dns_zone_ids }
  }
}

resource "azurerm_private_endpoint" "endpoint" {
  for_each            = local.endpoints
  name                = "${var.name_prefix}-${each.key}-pe"
  resource_group_name = var.resource_group_name
  location            = var.location
  subnet_id           = var.subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "${var.name_prefix}-${each.key}"
    private_connection_resource_id = each.value.resource_id
    subresource_names              = [each.value.group_id]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "default"
    private_dns_zone_ids = each.value.zone_ids
  }
}

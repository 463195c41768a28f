# Private networking (private_networking = true): a VNet with subnets for private endpoints,
# Azure ML compute and the Batch pool, a NAT gateway for the pool's outbound traffic (the
# start task installs packages; Batch node management), and the private DNS zones.

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "name_prefix" {
  description = "Name prefix of the network resources."
  type        = string
}

variable "storage_suffix" {
  description = "The cloud's storage host suffix (from the deployed account)."
  type        = string
}

variable "key_vault_dns_suffix" {
  description = "The cloud's Key Vault host suffix, '.vault.<domain>' (from the deployed vault)."
  type        = string
}

variable "registry_login_server" {
  description = "Login server of the registry ('<name>.azurecr.<tld>')."
  type        = string
}

variable "registry_name" {
  description = "Registry name (to cut the cloud's suffix from its login server)."
  type        = string
}

variable "address_prefix" {
  description = "Address space of the VNet."
  type        = string
  default     = "10.40.0.0/16"
}

variable "subnet_prefixes" {
  description = "Subnet of each role: private endpoints, Azure ML compute, Batch pool nodes."
  type        = map(string)
  default = {
    private_endpoints = "10.40.1.0/24"
    aml_compute       = "10.40.2.0/24"
    batch             = "10.40.3.0/24"
  }
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
}

locals {
  subnet_names = {
    private_endpoints = "snet-private-endpoints"
    aml_compute       = "snet-aml-compute"
    batch             = "snet-batch"
  }
  nsg_names = {
    private_endpoints = "${var.name_prefix}-pe-nsg"
    aml_compute       = "${var.name_prefix}-aml-nsg"
    batch             = "${var.name_prefix}-batch-nsg"
  }
  # Zones of the private endpoints (storage blob and queue, Key Vault, Container Registry, the
  # Azure ML workspace) in the cloud deployed to: keyvaultDns is '.vault.<domain>' (zone
  # privatelink.vaultcore.<domain>). The workspace's two zones (group amlworkspace) are the
  # public cloud's, as in bicep/modules/network.bicep (Microsoft's "Azure Private Endpoint
  # private DNS zone values", AI + Machine Learning).
  private_dns_zone_names = {
    blob                = "privatelink.blob.${var.storage_suffix}"
    queue               = "privatelink.queue.${var.storage_suffix}"
    vault               = "privatelink.vaultcore${replace(var.key_vault_dns_suffix, ".vault", "")}"
    registry            = "privatelink${trimprefix(var.registry_login_server, var.registry_name)}"
    workspace_api       = "privatelink.api.azureml.ms"
    workspace_notebooks = "privatelink.notebooks.azure.net"
  }
}

resource "azurerm_public_ip" "nat_ip" {
  name                = "${var.name_prefix}-nat-ip"
  resource_group_name = var.resource_group_name
  location            = var.location
  sku                 = "Standard"
  allocation_method   = "Static"
  ip_version          = "IPv4"
  tags                = var.tags
}

resource "azurerm_nat_gateway" "nat_gateway" {
  name                    = "${var.name_prefix}-nat"
  resource_group_name     = var.resource_group_name
  location                = var.location
  sku_name                = "Standard"
  idle_timeout_in_minutes = 4
  tags                    = var.tags
}

resource "azurerm_nat_gateway_public_ip_association" "nat_ip" {
  nat_gateway_id       = azurerm_nat_gateway.nat_gateway.id
  public_ip_address_id = azurerm_public_ip.nat_ip.id
}

resource "azurerm_network_security_group" "nsg" {
  for_each            = local.nsg_names
  name                = each.value
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

resource "azurerm_virtual_network" "vnet" {
  name                = "${var.name_prefix}-vnet"
  resource_group_name = var.resource_group_name
  location            = var.location
  address_space       = [var.address_prefix]
  tags                = var.tags
}

resource "azurerm_subnet" "subnet" {
  # checkov:skip=CKV2_AZURE_31: Each subnet gets its network security group through azurerm_subnet_network_security_group_association below.
  for_each                          = local.subnet_names
  name                              = each.value
  resource_group_name               = var.resource_group_name
  virtual_network_name              = azurerm_virtual_network.vnet.name
  address_prefixes                  = [var.subnet_prefixes[each.key]]
  default_outbound_access_enabled   = false
  private_endpoint_network_policies = each.key == "private_endpoints" ? "Enabled" : "Disabled"
}

resource "azurerm_subnet_network_security_group_association" "subnet" {
  for_each                  = local.subnet_names
  subnet_id                 = azurerm_subnet.subnet[each.key].id
  network_security_group_id = azurerm_network_security_group.nsg[each.key].id
}

# Outbound through the NAT gateway: Azure ML compute and the Batch pool.
resource "azurerm_subnet_nat_gateway_association" "subnet" {
  for_each       = toset(["aml_compute", "batch"])
  subnet_id      = azurerm_subnet.subnet[each.key].id
  nat_gateway_id = azurerm_nat_gateway.nat_gateway.id
}

resource "azurerm_private_dns_zone" "zone" {
  for_each            = local.private_dns_zone_names
  name                = each.value
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "zone" {
  for_each              = local.private_dns_zone_names
  name                  = "${var.name_prefix}-vnet-link"
  resource_group_name   = var.resource_group_name
  private_dns_zone_name = azurerm_private_dns_zone.zone[each.key].name
  virtual_network_id    = azurerm_virtual_network.vnet.id
  registration_enabled  = false
  tags                  = var.tags
}

output "vnet_id" { value = azurerm_virtual_network.vnet.id }
output "private_endpoints_subnet_id" { value = azurerm_subnet.subnet["private_endpoints"].id }
output "aml_compute_subnet_id" { value = azurerm_subnet.subnet["aml_compute"].id }
output "batch_subnet_id" { value = azurerm_subnet.subnet["batch"].id }
output "blob_dns_zone_id" { value = azurerm_private_dns_zone.zone["blob"].id }
output "queue_dns_zone_id" { value = azurerm_private_dns_zone.zone["queue"].id }
output "vault_dns_zone_id" { value = azurerm_private_dns_zone.zone["vault"].id }
output "registry_dns_zone_id" { value = azurerm_private_dns_zone.zone["registry"].id }
output "workspace_dns_zone_ids" {
  value = [azurerm_private_dns_zone.zone["workspace_api"].id, azurerm_private_dns_zone.zone["workspace_notebooks"].id]
}

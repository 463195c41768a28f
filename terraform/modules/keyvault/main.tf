# Key Vault (RBAC authorization, soft delete, purge protection). It holds one secret, the
# storage account key ADF's Batch staging needs (written by modules/storage-key-secret).
# A soft-deleted vault of the same name is recovered (providers.tf, features.key_vault).

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "key_vault_name" {
  description = "Key Vault name."
  type        = string
}

variable "tenant_id" {
  description = "Tenant whose Entra ID authorizes access."
  type        = string
}

variable "private_networking" {
  description = "Deny public network access except the allowed IP and trusted services (private endpoints serve the VNet)."
  type        = bool
}

variable "allowed_ip_address" {
  description = "Public IP address allowed through the firewall in private mode."
  type        = string
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
}

resource "azurerm_key_vault" "vault" {
  # checkov:skip=CKV_AZURE_109: The default mode allows public networks (Entra ID RBAC only); private_networking = true sets the default action to Deny.
  # checkov:skip=CKV_AZURE_189: The default mode keeps public access for ADF's Azure IR; private_networking = true denies it except the allowed IP and trusted services.
  # checkov:skip=CKV2_AZURE_32: The default mode has no VNet; private_networking = true adds the vault's private endpoint (modules/private-endpoints).
  name                            = var.key_vault_name
  resource_group_name             = var.resource_group_name
  location                        = var.location
  tenant_id                       = var.tenant_id
  sku_name                        = "standard"
  rbac_authorization_enabled      = true
  soft_delete_retention_days      = 7
  purge_protection_enabled        = true
  enabled_for_deployment          = false
  enabled_for_disk_encryption     = false
  enabled_for_template_deployment = false
  public_network_access_enabled   = true
  tags                            = var.tags

  network_acls {
    default_action = var.private_networking ? "Deny" : "Allow"
    bypass         = "AzureServices"
    ip_rules       = var.private_networking && var.allowed_ip_address != "" ? [var.allowed_ip_address] : []
  }
}

output "key_vault_id" { value = azurerm_key_vault.vault.id }
output "key_vault_name" { value = azurerm_key_vault.vault.name }
output "key_vault_uri" { value = azurerm_key_vault.vault.vault_uri }
# The cloud's Key Vault host suffix (environment().suffixes.keyvaultDns in Bicep, '.vault.<domain>').
output "key_vault_dns_suffix" { value = trimsuffix(trimprefix(azurerm_key_vault.vault.vault_uri, "https://${azurerm_key_vault.vault.name}"), "/") }

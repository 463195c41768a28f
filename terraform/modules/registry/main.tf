# Container registry of the Azure ML workspace (environment images). Admin user off;
# Premium only when private networking needs private endpoints; anonymous pull off.

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "registry_name" {
  description = "Container registry name."
  type        = string
}

variable "private_networking" {
  description = "Use Premium with public access denied except the allowed IP (private endpoints serve the VNet)."
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

resource "azurerm_container_registry" "registry" {
  # checkov:skip=CKV_AZURE_139: The default mode keeps public access (Entra ID only, admin user off) because Basic has no private endpoints; private_networking = true uses Premium and denies it.
  # checkov:skip=CKV_AZURE_166: Image quarantine is a preview feature; images are built by Azure ML, not pushed by users.
  # checkov:skip=CKV_AZURE_233: Zone redundancy needs Premium; the default mode uses Basic to keep idle cost low.
  # checkov:skip=CKV_AZURE_163: Image vulnerability scanning is Defender for Containers, a subscription-wide plan; enabling it here would change the billing of the whole subscription.
  # checkov:skip=CKV_AZURE_164: Content trust (signed images) needs Premium and Docker Content Trust signing; Azure ML builds and pulls its own images.
  # checkov:skip=CKV_AZURE_165: Geo-replication needs Premium; one region holds the images of one workspace.
  # checkov:skip=CKV_AZURE_167: A retention policy for untagged manifests needs Premium; Azure ML tags the images it builds.
  # checkov:skip=CKV_AZURE_237: Dedicated data endpoints need Premium; the default mode uses Basic to keep idle cost low.
  name                          = var.registry_name
  resource_group_name           = var.resource_group_name
  location                      = var.location
  sku                           = var.private_networking ? "Premium" : "Basic"
  admin_enabled                 = false
  anonymous_pull_enabled        = false
  public_network_access_enabled = true
  network_rule_bypass_option    = "AzureServices"
  tags                          = var.tags

  dynamic "network_rule_set" {
    for_each = var.private_networking ? [1] : []
    content {
      default_action = "Deny"
      dynamic "ip_rule" {
        for_each = var.allowed_ip_address == "" ? [] : [var.allowed_ip_address]
        content {
          action   = "Allow"
          ip_range = "${ip_rule.value}/32"
        }
      }
    }
  }
}

output "registry_id" { value = azurerm_container_registry.registry.id }
output "registry_name" { value = azurerm_container_registry.registry.name }
output "login_server" { value = azurerm_container_registry.registry.login_server }

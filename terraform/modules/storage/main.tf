# Storage account of the Azure ML datastore: the trainer's staging folder, the published
# MLflow models, ADF's `adfjobs` log container, and the sweep's queues.

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "storage_account_name" {
  description = "Storage account name."
  type        = string
}

variable "datastore_container" {
  description = "Blob container of the datastore."
  type        = string
}

variable "private_networking" {
  description = "Deny public network access except the allowed IP and the trusted resource (private endpoints serve the VNet)."
  type        = bool
}

variable "allowed_ip_address" {
  description = "Public IP address allowed through the firewall in private mode (for set-up from your machine)."
  type        = string
}

variable "trusted_resource_id" {
  description = "Resource id of the one resource instance allowed through the firewall in private mode (the Azure ML workspace); empty for none."
  type        = string
}

variable "tenant_id" {
  description = "Tenant of the trusted resource."
  type        = string
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
}

resource "azurerm_storage_account" "storage" {
  # checkov:skip=CKV_AZURE_206: LRS is enough for a training datastore that can be rebuilt from the repo; geo-replication doubles the cost.
  # checkov:skip=CKV_AZURE_59: Public network access is required by ADF's Azure IR and the Batch nodes in the default mode and on the staging account of private mode (trainer files and task logs only); private_networking = true denies it on the datastore except the allowed IP, trusted services and the workspace.
  # checkov:skip=CKV_AZURE_35: The default mode allows public networks (HTTPS and TLS 1.2 only, no anonymous blob access); private_networking = true sets the default action to Deny.
  # checkov:skip=CKV_AZURE_33: Queue logging is classic Storage Analytics; the sweep's queues are short-lived and their messages are the grid lines in the repo.
  # checkov:skip=CKV_AZURE_43: The name is a variable checkov cannot resolve; main.tf builds it from lowercase letters and digits, at most 24 characters (tests/terraform/test_terraform.py checks it).
  # checkov:skip=CKV2_AZURE_1: Microsoft-managed keys; customer-managed keys need a key-rotation process this project does not run.
  # checkov:skip=CKV2_AZURE_33: The default mode has no VNet; private_networking = true adds the blob private endpoint (modules/private-endpoints).
  # checkov:skip=CKV2_AZURE_40: ADF's Batch staging linked service supports account-key auth only (adf/linkedServices/AzureBlobStorageLinkedService.json); the key lives in Key Vault.
  # checkov:skip=CKV2_AZURE_41: No SAS is issued by this project (Entra ID everywhere, the account key only for ADF's staging); a SAS expiration policy would guard nothing.
  name                              = var.storage_account_name
  resource_group_name               = var.resource_group_name
  location                          = var.location
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = "LRS"
  access_tier                       = "Hot"
  https_traffic_only_enabled        = true
  min_tls_version                   = "TLS1_2"
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = true
  cross_tenant_replication_enabled  = false
  default_to_oauth_authentication   = true
  local_user_enabled                = false
  sftp_enabled                      = false
  public_network_access_enabled     = true
  infrastructure_encryption_enabled = true
  tags                              = var.tags

  network_rules {
    default_action = var.private_networking ? "Deny" : "Allow"
    bypass         = ["AzureServices"]
    ip_rules       = var.private_networking && var.allowed_ip_address != "" ? [var.allowed_ip_address] : []

    dynamic "private_link_access" {
      for_each = var.private_networking && var.trusted_resource_id != "" ? [var.trusted_resource_id] : []
      content {
        endpoint_resource_id = private_link_access.value
        endpoint_tenant_id   = var.tenant_id
      }
    }
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "container" {
  # checkov:skip=CKV2_AZURE_21: Blob read logging is classic Storage Analytics; access is by Entra ID identities whose roles are in modules/roles.
  name                  = var.datastore_container
  storage_account_id    = azurerm_storage_account.storage.id
  container_access_type = "private"
}

# ADF writes the Custom activity's stdout/stderr here; created up front so its access is private.
resource "azurerm_storage_container" "adf_jobs_container" {
  # checkov:skip=CKV2_AZURE_21: Blob read logging is classic Storage Analytics; access is by Entra ID identities whose roles are in modules/roles.
  name                  = "adfjobs"
  storage_account_id    = azurerm_storage_account.storage.id
  container_access_type = "private"
}

output "storage_account_id" { value = azurerm_storage_account.storage.id }
output "storage_account_name" { value = azurerm_storage_account.storage.name }
# The cloud's storage host suffix (environment().suffixes.storage in Bicep), from the blob host.
output "storage_suffix" { value = trimprefix(azurerm_storage_account.storage.primary_blob_host, "${azurerm_storage_account.storage.name}.blob.") }
# Without the trailing slash of primary_blob_endpoint, as the CLIs and the trainer expect.
output "blob_endpoint" { value = trimsuffix(azurerm_storage_account.storage.primary_blob_endpoint, "/") }
output "container_name" { value = azurerm_storage_container.container.name }
# With storage_account_id set, the container's id is its Resource Manager id (role scope, datastore).
output "container_id" { value = azurerm_storage_container.container.id }

provider "azurerm" {
  # Data-plane calls authenticate with Entra ID, not the account key.
  storage_use_azuread = true

  features {
    key_vault {
      # A vault of the same name deleted by `make destroy IAC=terraform` stays soft-deleted
      # (purge protection): recover it instead of failing on the name (as bicep/azure.sh does).
      recover_soft_deleted_key_vaults = true
      purge_soft_delete_on_destroy    = false
    }
    storage {
      # Every storage call through Resource Manager: otherwise azurerm 4.x reads each account's
      # queue properties through the data plane on every refresh, which the private-mode
      # firewall refuses to any other address than ALLOWED_IP (hashicorp/terraform-provider-azurerm#16240).
      # No queue_properties or static_website block is used, as the flag requires.
      data_plane_available = false
    }
    resource_group {
      # Azure ML adds resources of its own (endpoints, clusters) to the group.
      prevent_deletion_if_contains_resources = false
    }
  }
}

provider "azapi" {}

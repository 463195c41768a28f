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
    resource_group {
      # Azure ML adds resources of its own (endpoints, clusters) to the group.
      prevent_deletion_if_contains_resources = false
    }
  }
}

provider "azapi" {}

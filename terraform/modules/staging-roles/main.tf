# Private mode: whoever deploys stages the trainer into the staging account and reads the
# task logs there (`python -m adf`), as modules/roles grants on the datastore account in the
# default mode. Data Factory uses the account key from Key Vault (ADF's Batch staging needs it).

variable "staging_storage_account_id" {
  description = "Resource id of the staging storage account."
  type        = string
}

variable "deployer_principal_id" {
  description = "Object id of the user or service principal running the deployment; empty to skip."
  type        = string
}

variable "deployer_principal_type" {
  description = "Type of that principal."
  type        = string
}

data "azurerm_subscription" "current" {}

locals {
  # Storage Blob Data Contributor (Microsoft's built-in roles list; tests/fixtures/builtin_roles.json).
  roles = {
    storageBlobDataContributor = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
  }
  deployer_roles = {
    deployerStages = { scope = var.staging_storage_account_id, role = local.roles.storageBlobDataContributor, description = "The deploying user or pipeline stages the trainer and reads the task logs." }
  }
  deployer_assignments = { for name, item in local.deployer_roles : name => item if var.deployer_principal_id != "" }
}

resource "azurerm_role_assignment" "deployer" {
  for_each           = local.deployer_assignments
  scope              = each.value.scope
  role_definition_id = "${data.azurerm_subscription.current.id}/providers/Microsoft.Authorization/roleDefinitions/${each.value.role}"
  principal_id       = var.deployer_principal_id
  principal_type     = var.deployer_principal_type
  description        = each.value.description
}

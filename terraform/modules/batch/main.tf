# Batch account (auto-storage through its managed identity, Entra ID auth only) and the
# DSVM pool that runs the trainer: user-assigned identity, autoscale to zero when idle,
# and a pool-scope admin start task installing trainer/requirements.txt into the fixed
# virtualenv the ADF activity calls (/opt/iris-trainer/venv/bin/python). The same pool as
# bicep/modules/batch.bicep (tests/terraform/test_parity.py compares the settings).

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "batch_account_name" {
  description = "Batch account name."
  type        = string
}

variable "pool_id" {
  description = "Pool id (BATCH_POOL_ID)."
  type        = string
}

variable "storage_account_id" {
  description = "Resource id of the auto-storage account."
  type        = string
}

variable "pool_identity_id" {
  description = "Resource id of the pool nodes' user-assigned identity."
  type        = string
}

variable "vm_size" {
  description = "VM size of the pool nodes."
  type        = string
}

variable "max_nodes" {
  description = "Most nodes autoscale may allocate."
  type        = number
}

variable "subnet_id" {
  description = "Subnet of the pool nodes (private networking); empty for Batch-managed networking."
  type        = string
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
}

locals {
  # The DSVM image (see docs/azure.md for checking it with `az batch pool supported-images list`).
  image_reference = {
    publisher = "microsoft-dsvm"
    offer     = "ubuntu-hpc"
    sku       = "2204"
    version   = "latest"
  }
  node_agent_sku_id = "batch.node.ubuntu 22.04"

  # Zero nodes while nothing is pending; one node per pending task up to max_nodes otherwise.
  # The first sample makes a new task start a node at the next evaluation (every 5 minutes).
  auto_scale_formula = join("\n", [
    "$pending = max(0, $PendingTasks.GetSample(1));",
    "$recent = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 5) < 70 ? $pending : max($pending, avg($PendingTasks.GetSample(TimeInterval_Minute * 5)));",
    "$TargetDedicatedNodes = min(${var.max_nodes}, $recent);",
    "$TargetLowPriorityNodes = 0;",
    "$NodeDeallocationOption = taskcompletion;",
  ])
}

resource "azurerm_batch_account" "batch_account" {
  # checkov:skip=CKV_AZURE_76: Microsoft-managed keys; customer-managed keys need a key-rotation process this project does not run.
  name                                = var.batch_account_name
  resource_group_name                 = var.resource_group_name
  location                            = var.location
  pool_allocation_mode                = "BatchService"
  public_network_access_enabled       = true
  allowed_authentication_modes        = ["AAD", "TaskAuthenticationToken"]
  storage_account_id                  = var.storage_account_id
  storage_account_authentication_mode = "BatchAccountManagedIdentity"
  storage_account_node_identity       = var.pool_identity_id
  tags                                = var.tags

  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_batch_pool" "pool" {
  name                           = var.pool_id
  account_name                   = azurerm_batch_account.batch_account.name
  resource_group_name            = var.resource_group_name
  display_name                   = "Iris trainer (DSVM)"
  vm_size                        = var.vm_size
  max_tasks_per_node             = 1
  inter_node_communication       = "Disabled"
  target_node_communication_mode = "Simplified"
  node_agent_sku_id              = local.node_agent_sku_id

  identity {
    type         = "UserAssigned"
    identity_ids = [var.pool_identity_id]
  }

  storage_image_reference {
    publisher = local.image_reference.publisher
    offer     = local.image_reference.offer
    sku       = local.image_reference.sku
    version   = local.image_reference.version
  }

  auto_scale {
    formula             = local.auto_scale_formula
    evaluation_interval = "PT5M"
  }

  dynamic "network_configuration" {
    for_each = var.subnet_id == "" ? [] : [var.subnet_id]
    content {
      subnet_id                        = network_configuration.value
      public_address_provisioning_type = "NoPublicIPAddresses"
    }
  }

  start_task {
    command_line = "/bin/bash -c \"echo $START_TASK_B64 | base64 -d > start-task.sh && /bin/bash start-task.sh\""
    common_environment_properties = {
      START_TASK_B64           = base64encode(file("${path.module}/../../../bicep/pool-start-task.sh"))
      TRAINER_REQUIREMENTS_B64 = base64encode(file("${path.module}/../../../trainer/requirements.txt"))
    }
    task_retry_maximum = 2
    wait_for_success   = true

    user_identity {
      auto_user {
        scope           = "Pool"
        elevation_level = "Admin"
      }
    }
  }
}

output "batch_account_name" { value = azurerm_batch_account.batch_account.name }
output "batch_account_id" { value = azurerm_batch_account.batch_account.id }
output "batch_account_url" { value = "https://${azurerm_batch_account.batch_account.account_endpoint}" }
output "batch_principal_id" { value = azurerm_batch_account.batch_account.identity[0].principal_id }
output "pool_id" { value = azurerm_batch_pool.pool.name }

# The parameters of bicep/main.bicep, in snake_case. bicep/azure.sh (IAC=terraform) checks
# them before Terraform runs, and the validations below repeat those checks.

variable "location" {
  description = "Azure region of every resource."
  type        = string
  default     = "westeurope"
}

variable "prefix" {
  description = "Short name prefix (3-10 lowercase letters or digits, starting with a letter); resource names add a suffix unique to the subscription, prefix and region."
  type        = string
  default     = "irisops"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,9}$", var.prefix))
    error_message = "prefix must be 3-10 lowercase letters or digits starting with a letter (storage, Key Vault, Data Factory, Batch and registry names are built from it)."
  }
}

variable "resource_group_name" {
  description = "Resource group name; rg-<prefix> when empty."
  type        = string
  default     = ""
}

# Refused for now, as in bicep/main.bicep: with the storage firewall on Deny, Data Factory's
# shared integration runtime stages the Custom activity with the account key from outside
# the VNet and is refused (docs/azure.md, "Private networking").
variable "private_networking" {
  description = "Private networking: VNet, private endpoints and DNS zones for storage, Key Vault and ACR. Not supported yet: only false is allowed."
  type        = bool
  default     = false
  validation {
    condition     = !var.private_networking
    error_message = "private_networking = true is not supported yet: Data Factory's shared integration runtime cannot stage the training job behind the storage firewall (docs/azure.md, \"Private networking\")."
  }
}

variable "allowed_ip_address" {
  description = "Your public IP address, allowed through the firewalls in private mode so set-up and staging work from your machine."
  type        = string
  default     = ""
}

variable "pool_vm_size" {
  description = "VM size of the Batch pool nodes."
  type        = string
  default     = "Standard_D2s_v3"
}

variable "pool_max_nodes" {
  description = "Most nodes the pool autoscales to (it scales to zero when idle)."
  type        = number
  default     = 1
  validation {
    condition     = var.pool_max_nodes >= 1 && var.pool_max_nodes <= 20 && floor(var.pool_max_nodes) == var.pool_max_nodes
    error_message = "pool_max_nodes must be a whole number from 1 to 20."
  }
}

variable "batch_pool_id" {
  description = "Batch pool id (BATCH_POOL_ID)."
  type        = string
  default     = "dsvm-pool"
}

variable "datastore_container" {
  description = "Blob container of the datastore (DATASTORE_CONTAINER)."
  type        = string
  default     = "azureml"
}

variable "datastore_name" {
  description = "Azure ML datastore over that container (DATASTORE_NAME)."
  type        = string
  default     = "irisdata"
}

variable "model_prefix" {
  description = "Folder where the trainer publishes MLflow runs (MODEL_PREFIX)."
  type        = string
  default     = "models"
}

variable "staging_prefix" {
  description = "Folder the ADF Custom activity downloads (STAGING_PREFIX)."
  type        = string
  default     = "adf/iris-training"
}

variable "factory_batch_role" {
  description = "Batch role of the factory identity: jobSubmitter (least privilege) or dataContributor."
  type        = string
  default     = "jobSubmitter"
  validation {
    condition     = contains(["jobSubmitter", "dataContributor"], var.factory_batch_role)
    error_message = "factory_batch_role must be jobSubmitter or dataContributor."
  }
}

variable "deployer_principal_id" {
  description = "Object id of the user or service principal deploying (gets blob data access to stage files and read logs); empty to skip."
  type        = string
  default     = ""
}

variable "deployer_principal_type" {
  description = "Type of that principal."
  type        = string
  default     = "User"
  validation {
    condition     = contains(["User", "ServicePrincipal", "Group"], var.deployer_principal_type)
    error_message = "deployer_principal_type must be User, ServicePrincipal or Group."
  }
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default = {
    project = "iris-batch-mlops"
  }
}

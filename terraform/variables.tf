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

# Private mode (docs/azure.md, "Private networking"): the datastore account, Key Vault,
# registry and workspace get private endpoints in the VNet and firewalls on Deny (the allowed
# IP excepted); Data Factory's Azure integration runtime stages the Custom activity into a
# separate staging account that holds only the trainer's files and the task logs.
variable "private_networking" {
  description = "Private networking: VNet, private endpoints and DNS zones for blob, queue, Key Vault, the registry and the workspace; the pool and Azure ML compute in their subnets; a separate staging account for Data Factory."
  type        = bool
  default     = false
}

variable "allowed_ip_address" {
  description = "Your public IP address, allowed through the firewalls in private mode so set-up and staging work from your machine."
  type        = string
  default     = ""
  # A public IPv4 address, as bicep/azure.sh checks it: four octets without leading zeros, none
  # of the RFC 1918 ranges the storage firewall refuses, nor "this network", loopback,
  # link-local, carrier-grade NAT, multicast or reserved.
  validation {
    condition = !var.private_networking || (
      can(regex("^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$", var.allowed_ip_address)) &&
      !can(regex("^(0|10|127|22[4-9]|2[3-5][0-9])\\.|^172\\.(1[6-9]|2[0-9]|3[01])\\.|^192\\.168\\.|^169\\.254\\.|^100\\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\\.", var.allowed_ip_address))
    )
    error_message = "private_networking = true needs allowed_ip_address, your public IPv4 address (not a private, loopback or reserved one): the firewalls deny every other public address."
  }
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

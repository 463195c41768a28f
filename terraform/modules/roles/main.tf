# Role assignments, least privilege, each scoped to the one resource it needs: the
# assignments of bicep/modules/roles.bicep (same keys, roles, principals and scopes;
# tests/terraform/test_parity.py compares them).

variable "storage_account_id" {
  description = "Resource id of the storage account."
  type        = string
}

variable "container_id" {
  description = "Resource id of the datastore's blob container."
  type        = string
}

variable "storage_key_secret_id" {
  description = "Resource id of the secret holding the storage account key."
  type        = string
}

variable "batch_account_id" {
  description = "Resource id of the Batch account."
  type        = string
}

variable "workspace_id" {
  description = "Resource id of the Azure ML workspace."
  type        = string
}

variable "registry_id" {
  description = "Resource id of the container registry."
  type        = string
}

variable "aml_compute_identity_id" {
  description = "Resource id of the Azure ML compute clusters' user-assigned identity."
  type        = string
}

variable "pool_identity_principal_id" {
  description = "Principal id of the pool nodes' user-assigned identity."
  type        = string
}

variable "factory_identity_principal_id" {
  description = "Principal id of the factory's user-assigned identity (Batch linked service)."
  type        = string
}

variable "aml_compute_identity_principal_id" {
  description = "Principal id of the Azure ML compute clusters' identity."
  type        = string
}

variable "factory_principal_id" {
  description = "Principal id of the factory's system-assigned identity."
  type        = string
}

variable "workspace_principal_id" {
  description = "Principal id of the workspace's system-assigned identity."
  type        = string
}

variable "batch_account_principal_id" {
  description = "Principal id of the Batch account's system-assigned identity."
  type        = string
}

variable "factory_batch_role" {
  description = "Batch role of the factory identity: jobSubmitter (least privilege) or dataContributor (if your tenant's ADF needs pool reads)."
  type        = string
}

variable "deployer_principal_id" {
  description = "Object id of the user or service principal running the deployment (stages files, reads logs and models); empty to skip."
  type        = string
}

variable "deployer_principal_type" {
  description = "Type of that principal."
  type        = string
}

data "azurerm_subscription" "current" {}

locals {
  # Built-in role definition ids (Microsoft's built-in roles list; tests/fixtures/builtin_roles.json).
  roles = {
    storageBlobDataContributor  = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    storageBlobDataReader       = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
    storageQueueDataContributor = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
    keyVaultSecretsUser         = "4633458b-17de-408a-b874-0445c86b69e6"
    acrPull                     = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
    jobSubmitter                = "48e5e92e-a480-4e71-aa9c-2778f4c13781"
    dataContributor             = "6aaa78f1-f7de-44ca-8722-c64a23943cae"
    batchAccountReader          = "11076f67-66f6-4be0-8f6b-f0609fd05cc9"
    azureMLDataScientist        = "f6c7c914-8db3-469d-8ca1-694a8f32e121"
    azureMLComputeOperator      = "e503ece1-11d0-4e8e-8e2c-7a6c3bf38815"
    managedIdentityOperator     = "f1a07417-d97a-45cb-824c-7a7467783830"
  }

  # The service identities' assignments (principal type ServicePrincipal). Why each exists is
  # said beside its twin in bicep/modules/roles.bicep.
  service_assignments = {
    poolWritesModels             = { scope = var.container_id, principal_id = var.pool_identity_principal_id, role = local.roles.storageBlobDataContributor, description = "Batch pool nodes write MLflow model blobs." }
    poolProcessesQueues          = { scope = var.storage_account_id, principal_id = var.pool_identity_principal_id, role = local.roles.storageQueueDataContributor, description = "Batch pool nodes run sweep lines from storage queues." }
    factoryRunsBatchJobs         = { scope = var.batch_account_id, principal_id = var.factory_identity_principal_id, role = local.roles[var.factory_batch_role], description = "Data Factory runs the training job on the Batch pool." }
    factoryReadsStaging          = { scope = var.container_id, principal_id = var.factory_principal_id, role = local.roles.storageBlobDataReader, description = "Data Factory reads the staging folder." }
    factoryReadsStorageKeySecret = { scope = var.storage_key_secret_id, principal_id = var.factory_principal_id, role = local.roles.keyVaultSecretsUser, description = "Data Factory reads the staging storage key secret." }
    factoryInvokesBatchEndpoints = { scope = var.workspace_id, principal_id = var.factory_principal_id, role = local.roles.azureMLDataScientist, description = "Data Factory invokes the batch endpoint and reads its jobs (score-iris)." }
    workspaceReadsDatastore      = { scope = var.container_id, principal_id = var.workspace_principal_id, role = local.roles.storageBlobDataReader, description = "Azure ML workspace reads the datastore." }
    batchUsesAutoStorage         = { scope = var.storage_account_id, principal_id = var.batch_account_principal_id, role = local.roles.storageBlobDataContributor, description = "Batch account auto-storage (application packages, task output)." }
    amlComputeUsesStorage        = { scope = var.storage_account_id, principal_id = var.aml_compute_identity_principal_id, role = local.roles.storageBlobDataContributor, description = "Azure ML compute reads the datastore and writes scoring output." }
    amlComputePullsImages        = { scope = var.registry_id, principal_id = var.aml_compute_identity_principal_id, role = local.roles.acrPull, description = "Azure ML compute pulls environment images." }
    poolUsesWorkspace            = { scope = var.workspace_id, principal_id = var.pool_identity_principal_id, role = local.roles.azureMLDataScientist, description = "Batch pool nodes register models and roll out batch deployments (deploy-iris)." }
    poolManagesCompute           = { scope = var.workspace_id, principal_id = var.pool_identity_principal_id, role = local.roles.azureMLComputeOperator, description = "Batch pool nodes create the scoring cluster (deploy-iris)." }
    poolAssignsComputeIdentity   = { scope = var.aml_compute_identity_id, principal_id = var.pool_identity_principal_id, role = local.roles.managedIdentityOperator, description = "Batch pool nodes give the scoring cluster its identity (deploy-iris)." }
  }

  # Whoever deploys (only when an object id is given).
  deployer_assignments = { for name, item in local.deployer_roles : name => item if var.deployer_principal_id != "" }
  deployer_roles = {
    deployerUsesStorage            = { scope = var.storage_account_id, role = local.roles.storageBlobDataContributor, description = "The deploying user or pipeline stages files and reads logs and models." }
    deployerUsesQueues             = { scope = var.storage_account_id, role = local.roles.storageQueueDataContributor, description = "The deploying user or pipeline starts sweeps and reads their queues." }
    deployerReadsBatch             = { scope = var.batch_account_id, role = local.roles.batchAccountReader, description = "The deploying user or pipeline reads pool state and task output." }
    deployerUsesWorkspace          = { scope = var.workspace_id, role = local.roles.azureMLDataScientist, description = "The deploying user or pipeline registers models and runs batch endpoints." }
    deployerManagesCompute         = { scope = var.workspace_id, role = local.roles.azureMLComputeOperator, description = "The deploying user or pipeline creates and deletes the scoring cluster." }
    deployerAssignsComputeIdentity = { scope = var.aml_compute_identity_id, role = local.roles.managedIdentityOperator, description = "The deploying user or pipeline gives the scoring cluster its identity." }
  }
}

resource "azurerm_role_assignment" "service" {
  for_each           = local.service_assignments
  scope              = each.value.scope
  role_definition_id = "${data.azurerm_subscription.current.id}/providers/Microsoft.Authorization/roleDefinitions/${each.value.role}"
  principal_id       = each.value.principal_id
  principal_type     = "ServicePrincipal"
  description        = each.value.description

  # New managed identities take a while to reach Entra ID's replicas.
  skip_service_principal_aad_check = true
}

resource "azurerm_role_assignment" "deployer" {
  for_each           = local.deployer_assignments
  scope              = each.value.scope
  role_definition_id = "${data.azurerm_subscription.current.id}/providers/Microsoft.Authorization/roleDefinitions/${each.value.role}"
  principal_id       = var.deployer_principal_id
  principal_type     = var.deployer_principal_type
  description        = each.value.description
}

# Everything the Iris pipeline runs on, in one resource group: the Terraform twin of
# bicep/main.bicep (same resources, roles and outputs; tests/terraform/test_parity.py holds
# them together). Deploy with `make deploy-infra IAC=terraform`; the outputs become .env
# (bicep/env_writer.py reads `terraform output -json`). No output carries a key.

data "azurerm_client_config" "current" {}

locals {
  # Unique to the subscription, prefix and region (Bicep: uniqueString(...), not reproducible here).
  suffix         = substr(sha256("${data.azurerm_client_config.current.subscription_id}/${var.prefix}/${var.location}"), 0, 6)
  compact_prefix = lower(replace(var.prefix, "-", ""))
  names = {
    resource_group = var.resource_group_name == "" ? "rg-${var.prefix}" : var.resource_group_name
    storage        = "${local.compact_prefix}st${local.suffix}"

    # Private mode only: the Custom activity's staging folder and task logs (no data, no models).
    staging_storage      = "${local.compact_prefix}stg${local.suffix}"
    key_vault            = "${var.prefix}-kv-${local.suffix}"
    registry             = "${local.compact_prefix}acr${local.suffix}"
    log_analytics        = "${var.prefix}-log-${local.suffix}"
    app_insights         = "${var.prefix}-appi-${local.suffix}"
    workspace            = "${var.prefix}-mlw-${local.suffix}"
    batch                = "${local.compact_prefix}batch${local.suffix}"
    factory              = "${var.prefix}-adf-${local.suffix}"
    pool_identity        = "${var.prefix}-pool-id"
    factory_identity     = "${var.prefix}-adf-id"
    aml_compute_identity = "${var.prefix}-aml-compute-id"
    network              = "${var.prefix}-${local.suffix}"

    # Batch endpoint names are unique per region: prefix + suffix, at most 32 characters.
    batch_endpoint = substr("${var.prefix}-iris-${local.suffix}", 0, 32)
  }
  storage_key_secret_name = "storage-account-key"

  # Where the factory stages the Custom activity: the datastore account in the default mode,
  # the staging account in private mode.
  staging_account_name = var.private_networking ? module.staging_storage[0].storage_account_name : module.storage.storage_account_name
  staging_account_id   = var.private_networking ? module.staging_storage[0].storage_account_id : module.storage.storage_account_id
  staging_blob_url     = var.private_networking ? module.staging_storage[0].blob_endpoint : module.storage.blob_endpoint

  # The .env values known before the factory exists (all but ADF_FACTORY and ADF_PIPELINE,
  # which come from the data-factory module): each is the output of its key in outputs.tf,
  # and the data-factory module fills adf/'s __KEY__ placeholders from this same map.
  env = {
    AZURE_SUBSCRIPTION_ID      = data.azurerm_client_config.current.subscription_id
    AZURE_RESOURCE_GROUP       = azurerm_resource_group.rg.name
    AZURE_LOCATION             = var.location
    AZURE_STORAGE_ACCOUNT      = module.storage.storage_account_name
    AZURE_STORAGE_BLOB_URL     = module.storage.blob_endpoint
    AZURE_KEY_VAULT            = module.keyvault.key_vault_name
    STAGING_STORAGE_ACCOUNT    = local.staging_account_name
    STAGING_STORAGE_BLOB_URL   = local.staging_blob_url
    AZURE_STORAGE_SUFFIX       = module.storage.storage_suffix
    AZURE_KEY_VAULT_DNS_SUFFIX = module.keyvault.key_vault_dns_suffix
    AML_WORKSPACE              = module.ml_workspace.workspace_name
    ADF_IDENTITY_RESOURCE_ID   = module.identities.factory_identity_id
    BATCH_ACCOUNT              = module.batch.batch_account_name
    BATCH_ACCOUNT_URL          = module.batch.batch_account_url
    BATCH_POOL_ID              = module.batch.pool_id
    BATCH_POOL_MAX_NODES       = tostring(var.pool_max_nodes)
    POOL_IDENTITY_CLIENT_ID    = module.identities.pool_identity_client_id
    DATASTORE_NAME             = module.ml_workspace.datastore_name
    DATASTORE_CONTAINER        = module.storage.container_name
    MODEL_PREFIX               = var.model_prefix
    STAGING_PREFIX             = var.staging_prefix
    BATCH_ENDPOINT_NAME        = local.names.batch_endpoint
    AML_COMPUTE_IDENTITY_ID    = module.identities.aml_compute_identity_id

    # Private mode: the subnet the deployer creates the scoring cluster in (empty: no VNet).
    AML_COMPUTE_SUBNET_ID = var.private_networking ? module.network[0].aml_compute_subnet_id : ""
  }
}

resource "azurerm_resource_group" "rg" {
  name     = local.names.resource_group
  location = var.location
  tags     = var.tags
}

module "identities" {
  source                    = "./modules/identities"
  resource_group_name       = azurerm_resource_group.rg.name
  location                  = var.location
  pool_identity_name        = local.names.pool_identity
  factory_identity_name     = local.names.factory_identity
  aml_compute_identity_name = local.names.aml_compute_identity
  tags                      = var.tags
}

module "monitoring" {
  source              = "./modules/monitoring"
  resource_group_name = azurerm_resource_group.rg.name
  location            = var.location
  log_analytics_name  = local.names.log_analytics
  app_insights_name   = local.names.app_insights
  tags                = var.tags
}

module "network" {
  source                = "./modules/network"
  count                 = var.private_networking ? 1 : 0
  resource_group_name   = azurerm_resource_group.rg.name
  location              = var.location
  name_prefix           = local.names.network
  storage_suffix        = module.storage.storage_suffix
  key_vault_dns_suffix  = module.keyvault.key_vault_dns_suffix
  registry_login_server = module.registry.login_server
  registry_name         = module.registry.registry_name
  tags                  = var.tags
}

module "storage" {
  source               = "./modules/storage"
  resource_group_name  = azurerm_resource_group.rg.name
  location             = var.location
  storage_account_name = local.names.storage
  datastore_container  = var.datastore_container
  private_networking   = var.private_networking
  allowed_ip_address   = var.allowed_ip_address

  # The workspace reads the datastore as a resource instance (Azure ML's storage firewall guidance).
  trusted_resource_id = "${azurerm_resource_group.rg.id}/providers/Microsoft.MachineLearningServices/workspaces/${local.names.workspace}"
  tenant_id           = data.azurerm_client_config.current.tenant_id
  tags                = var.tags
}

# Private mode: the account Data Factory stages the Custom activity into with its Azure
# integration runtime (public endpoint, HTTPS, no anonymous access). It holds the staged
# trainer files and the `adfjobs` task logs only; models, sweep queues and results stay in
# the private datastore account. In the default mode the datastore account stages too.
module "staging_storage" {
  source               = "./modules/storage"
  count                = var.private_networking ? 1 : 0
  resource_group_name  = azurerm_resource_group.rg.name
  location             = var.location
  storage_account_name = local.names.staging_storage
  datastore_container  = var.datastore_container
  private_networking   = false
  allowed_ip_address   = ""
  trusted_resource_id  = ""
  tenant_id            = data.azurerm_client_config.current.tenant_id
  tags                 = var.tags
}

module "keyvault" {
  source              = "./modules/keyvault"
  resource_group_name = azurerm_resource_group.rg.name
  location            = var.location
  key_vault_name      = local.names.key_vault
  tenant_id           = data.azurerm_client_config.current.tenant_id
  private_networking  = var.private_networking
  allowed_ip_address  = var.allowed_ip_address
  tags                = var.tags
}

module "storage_key_secret" {
  source = "./modules/storage-key-secret"

  # The key of the account the factory stages into (the staging account in private mode).
  storage_account_id = local.staging_account_id
  key_vault_id       = module.keyvault.key_vault_id
  secret_name        = local.storage_key_secret_name
}

module "registry" {
  source              = "./modules/registry"
  resource_group_name = azurerm_resource_group.rg.name
  location            = var.location
  registry_name       = local.names.registry
  private_networking  = var.private_networking
  allowed_ip_address  = var.allowed_ip_address
  tags                = var.tags
}

module "private_endpoints" {
  source                 = "./modules/private-endpoints"
  count                  = var.private_networking ? 1 : 0
  resource_group_name    = azurerm_resource_group.rg.name
  location               = var.location
  name_prefix            = local.names.network
  subnet_id              = module.network[0].private_endpoints_subnet_id
  storage_account_id     = module.storage.storage_account_id
  key_vault_id           = module.keyvault.key_vault_id
  registry_id            = module.registry.registry_id
  workspace_id           = module.ml_workspace.workspace_id
  blob_dns_zone_id       = module.network[0].blob_dns_zone_id
  queue_dns_zone_id      = module.network[0].queue_dns_zone_id
  vault_dns_zone_id      = module.network[0].vault_dns_zone_id
  registry_dns_zone_id   = module.network[0].registry_dns_zone_id
  workspace_dns_zone_ids = module.network[0].workspace_dns_zone_ids
  tags                   = var.tags
}

module "ml_workspace" {
  source              = "./modules/ml-workspace"
  resource_group_name = azurerm_resource_group.rg.name
  location            = var.location
  workspace_name      = local.names.workspace
  storage_account_id  = module.storage.storage_account_id
  container_id        = module.storage.container_id
  datastore_name      = var.datastore_name
  key_vault_id        = module.keyvault.key_vault_id
  app_insights_id     = module.monitoring.app_insights_id
  registry_id         = module.registry.registry_id
  tags                = var.tags
}

module "batch" {
  source              = "./modules/batch"
  resource_group_name = azurerm_resource_group.rg.name
  location            = var.location
  batch_account_name  = local.names.batch
  pool_id             = var.batch_pool_id
  storage_account_id  = module.storage.storage_account_id
  pool_identity_id    = module.identities.pool_identity_id
  vm_size             = var.pool_vm_size
  max_nodes           = var.pool_max_nodes
  subnet_id           = var.private_networking ? module.network[0].batch_subnet_id : ""
  tags                = var.tags
}

module "data_factory" {
  source              = "./modules/data-factory"
  resource_group_name = azurerm_resource_group.rg.name
  location            = var.location
  factory_name        = local.names.factory
  factory_identity_id = module.identities.factory_identity_id
  placeholders        = local.env
  tags                = var.tags

  # The storage linked service reads the key secret when a pipeline runs.
  depends_on = [module.storage_key_secret]
}

module "roles" {
  source                            = "./modules/roles"
  storage_account_id                = module.storage.storage_account_id
  container_id                      = module.storage.container_id
  storage_key_secret_id             = module.storage_key_secret.secret_id
  batch_account_id                  = module.batch.batch_account_id
  workspace_id                      = module.ml_workspace.workspace_id
  registry_id                       = module.registry.registry_id
  aml_compute_identity_id           = module.identities.aml_compute_identity_id
  pool_identity_principal_id        = module.identities.pool_identity_principal_id
  factory_identity_principal_id     = module.identities.factory_identity_principal_id
  aml_compute_identity_principal_id = module.identities.aml_compute_identity_principal_id
  factory_principal_id              = module.data_factory.factory_principal_id
  workspace_principal_id            = module.ml_workspace.workspace_principal_id
  batch_account_principal_id        = module.batch.batch_principal_id
  factory_batch_role                = var.factory_batch_role
  deployer_principal_id             = var.deployer_principal_id
  deployer_principal_type           = var.deployer_principal_type
}

module "staging_roles" {
  source                     = "./modules/staging-roles"
  count                      = var.private_networking ? 1 : 0
  staging_storage_account_id = module.staging_storage[0].storage_account_id
  deployer_principal_id      = var.deployer_principal_id
  deployer_principal_type    = var.deployer_principal_type
}

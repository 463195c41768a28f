# ---- Outputs read by bicep/env_writer.py (`terraform output -json`): one per .env key, named
# after it in camelCase as in bicep/main.bicep, each the value local.env gives that key.
output "azureSubscriptionId" { value = local.env["AZURE_SUBSCRIPTION_ID"] }
output "azureResourceGroup" { value = local.env["AZURE_RESOURCE_GROUP"] }
output "azureLocation" { value = local.env["AZURE_LOCATION"] }
output "azureStorageAccount" { value = local.env["AZURE_STORAGE_ACCOUNT"] }
output "azureStorageBlobUrl" { value = local.env["AZURE_STORAGE_BLOB_URL"] }
# Where `python -m adf` stages the trainer and reads task logs: the datastore account in the
# default mode, the staging account in private mode.
output "stagingStorageAccount" { value = local.env["STAGING_STORAGE_ACCOUNT"] }
output "stagingStorageBlobUrl" { value = local.env["STAGING_STORAGE_BLOB_URL"] }
output "azureKeyVault" { value = local.env["AZURE_KEY_VAULT"] }
output "azureStorageSuffix" { value = local.env["AZURE_STORAGE_SUFFIX"] }
output "azureKeyVaultDnsSuffix" { value = local.env["AZURE_KEY_VAULT_DNS_SUFFIX"] }
output "amlWorkspace" { value = local.env["AML_WORKSPACE"] }
output "adfFactory" { value = module.data_factory.factory_name }
output "adfPipeline" { value = module.data_factory.pipeline_name }
output "adfIdentityResourceId" { value = local.env["ADF_IDENTITY_RESOURCE_ID"] }
output "batchAccount" { value = local.env["BATCH_ACCOUNT"] }
output "batchAccountUrl" { value = local.env["BATCH_ACCOUNT_URL"] }
output "batchPoolId" { value = local.env["BATCH_POOL_ID"] }
output "batchPoolMaxNodes" { value = local.env["BATCH_POOL_MAX_NODES"] }
output "poolIdentityClientId" { value = local.env["POOL_IDENTITY_CLIENT_ID"] }
output "datastoreName" { value = local.env["DATASTORE_NAME"] }
output "datastoreContainer" { value = local.env["DATASTORE_CONTAINER"] }
output "modelPrefix" { value = local.env["MODEL_PREFIX"] }
output "stagingPrefix" { value = local.env["STAGING_PREFIX"] }
output "batchEndpointName" { value = local.env["BATCH_ENDPOINT_NAME"] }
output "amlComputeIdentityId" { value = local.env["AML_COMPUTE_IDENTITY_ID"] }
output "amlComputeSubnetId" { value = local.env["AML_COMPUTE_SUBNET_ID"] }

# ---- Further ids for scripts and the portal (no keys).
output "keyVaultUri" { value = module.keyvault.key_vault_uri }
output "containerRegistry" { value = module.registry.registry_name }
output "appInsights" { value = module.monitoring.app_insights_name }
output "amlWorkspaceId" { value = module.ml_workspace.workspace_id }
output "batchAccountId" { value = module.batch.batch_account_id }
output "adfFactoryId" { value = module.data_factory.factory_id }
output "poolIdentityId" { value = module.identities.pool_identity_id }
# The scoring cluster's identity (its resource id is amlComputeIdentityId above).
output "amlComputeIdentityClientId" { value = module.identities.aml_compute_identity_client_id }

# Terraform and provider versions. azurerm is pinned to the 4.55 line: the offline schema
# check (terraform/schema_check.py) reads that version's schema. azapi only for what azurerm
# lacks (modules/storage-key-secret, modules/data-factory: each says why).
terraform {
  # 1.11: azapi's sensitive_body (modules/storage-key-secret) is a write-only argument, which
  # Terraform supports from 1.11; variables.tf's validations refer to other variables (1.9).
  required_version = ">= 1.11.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.55.0"
    }
    azapi = {
      source  = "Azure/azapi"
      version = "~> 2.5"
    }
  }

  # Local state (terraform/terraform.tfstate) unless you configure a remote one: copy
  # backend.tf.example to backend.tf and pass TF_BACKEND_CONFIG (docs/azure.md, "Terraform state").
}

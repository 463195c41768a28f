# Log Analytics and workspace-based Application Insights for the Azure ML workspace.

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "log_analytics_name" {
  description = "Log Analytics workspace name."
  type        = string
}

variable "app_insights_name" {
  description = "Application Insights name."
  type        = string
}

variable "retention_in_days" {
  description = "Days of log retention."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
}

resource "azurerm_log_analytics_workspace" "log_analytics" {
  name                            = var.log_analytics_name
  resource_group_name             = var.resource_group_name
  location                        = var.location
  sku                             = "PerGB2018"
  retention_in_days               = var.retention_in_days
  allow_resource_only_permissions = true
  tags                            = var.tags
}

resource "azurerm_application_insights" "app_insights" {
  name                = var.app_insights_name
  resource_group_name = var.resource_group_name
  location            = var.location
  application_type    = "web"
  workspace_id        = azurerm_log_analytics_workspace.log_analytics.id
  tags                = var.tags
}

output "log_analytics_id" { value = azurerm_log_analytics_workspace.log_analytics.id }
output "app_insights_id" { value = azurerm_application_insights.app_insights.id }
output "app_insights_name" { value = azurerm_application_insights.app_insights.name }

// Container registry of the Azure ML workspace (environment images). Admin user off;
// Premium only when private networking needs private endpoints. Anonymous pull stays off
// (its default): 2023-07-01 has no anonymousPullEnabled property (first stable in 2025-04-01).

@description('Azure region.')
param location string

@description('Container registry name.')
param registryName string

@description('Use Premium with public access denied except the allowed IP (private endpoints serve the VNet).')
param privateNetworking bool

@description('Public IP address allowed through the firewall in private mode.')
param allowedIpAddress string

@description('Tags applied to every resource.')
param tags object

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_139: The default mode keeps public access (Entra ID only, admin user off) because Basic has no private endpoints; privateNetworking=true uses Premium and denies it.
  // checkov:skip=CKV_AZURE_166: Image quarantine is a preview feature; images are built by Azure ML, not pushed by users.
  // checkov:skip=CKV_AZURE_233: Zone redundancy needs Premium; the default mode uses Basic to keep idle cost low.
  // checkov:skip=CKV_AZURE_163: Image vulnerability scanning is Defender for Containers, a subscription-wide plan; enabling it here would change the billing of the whole subscription.
  name: registryName
  location: location
  tags: tags
  sku: {
    name: privateNetworking ? 'Premium' : 'Basic'
  }
  properties: {
    adminUserEnabled: false
    publicNetworkAccess: 'Enabled'
    networkRuleBypassOptions: 'AzureServices'
    networkRuleSet: privateNetworking ? {
      defaultAction: 'Deny'
      ipRules: empty(allowedIpAddress) ? [] : [
        {
          action: 'Allow'
          value: allowedIpAddress
        }
      ]
    } : null
  }
}

output registryId string = registry.id
output registryName string = registry.name
output loginServer string = registry.properties.loginServer

// Private networking (privateNetworking=true): a VNet with subnets for private endpoints,
// Azure ML compute and the Batch pool, a NAT gateway for the pool's outbound traffic (the
// start task installs packages; Batch node management), and the private DNS zones.

@description('Azure region.')
param location string

@description('Name prefix of the network resources.')
param namePrefix string

@description('Address space of the VNet.')
param addressPrefix string = '10.40.0.0/16'

@description('Subnet of the private endpoints.')
param privateEndpointsSubnetPrefix string = '10.40.1.0/24'

@description('Subnet of Azure ML compute clusters.')
param amlComputeSubnetPrefix string = '10.40.2.0/24'

@description('Subnet of the Batch pool nodes.')
param batchSubnetPrefix string = '10.40.3.0/24'

@description('Tags applied to every resource.')
param tags object

// Zones of the private endpoints (storage blob and queue, Key Vault, Container Registry, the
// Azure ML workspace), in the cloud deployed to: keyvaultDns is '.vault.<suffix>' (zone
// privatelink.vaultcore.<suffix>), acrLoginServer '.azurecr.<tld>'. The workspace's two zones
// (groupId amlworkspace) are the public cloud's: ARM's environment() has no suffix for them
// (Microsoft's "Azure Private Endpoint private DNS zone values", AI + Machine Learning).
var vaultDomain = replace(environment().suffixes.keyvaultDns, '.vault', '')
var privateDnsZoneNames = [
  'privatelink.blob.${environment().suffixes.storage}'
  'privatelink.queue.${environment().suffixes.storage}'
  'privatelink.vaultcore${vaultDomain}'
  'privatelink${environment().suffixes.acrLoginServer}'
  'privatelink.api.azureml.ms'
  'privatelink.notebooks.azure.net'
]

resource natIp 'Microsoft.Network/publicIPAddresses@2023-11-01' = {
  name: '${namePrefix}-nat-ip'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
  }
}

resource natGateway 'Microsoft.Network/natGateways@2023-11-01' = {
  name: '${namePrefix}-nat'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 4
    publicIpAddresses: [
      {
        id: natIp.id
      }
    ]
  }
}

resource privateEndpointsNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${namePrefix}-pe-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource amlComputeNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${namePrefix}-aml-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource batchNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${namePrefix}-batch-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: '${namePrefix}-vnet'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'snet-private-endpoints'
        properties: {
          addressPrefix: privateEndpointsSubnetPrefix
          networkSecurityGroup: {
            id: privateEndpointsNsg.id
          }
          privateEndpointNetworkPolicies: 'Enabled'
          defaultOutboundAccess: false
        }
      }
      {
        name: 'snet-aml-compute'
        properties: {
          addressPrefix: amlComputeSubnetPrefix
          networkSecurityGroup: {
            id: amlComputeNsg.id
          }
          natGateway: {
            id: natGateway.id
          }
          defaultOutboundAccess: false
        }
      }
      {
        name: 'snet-batch'
        properties: {
          addressPrefix: batchSubnetPrefix
          networkSecurityGroup: {
            id: batchNsg.id
          }
          natGateway: {
            id: natGateway.id
          }
          defaultOutboundAccess: false
        }
      }
    ]
  }
}

resource privateDnsZones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zone in privateDnsZoneNames: {
  name: zone
  location: 'global'
  tags: tags
}]

resource privateDnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zone, i) in privateDnsZoneNames: {
  parent: privateDnsZones[i]
  name: '${namePrefix}-vnet-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

output vnetId string = vnet.id
output privateEndpointsSubnetId string = vnet.properties.subnets[0].id
output amlComputeSubnetId string = vnet.properties.subnets[1].id
output batchSubnetId string = vnet.properties.subnets[2].id
output blobDnsZoneId string = privateDnsZones[0].id
output queueDnsZoneId string = privateDnsZones[1].id
output vaultDnsZoneId string = privateDnsZones[2].id
output registryDnsZoneId string = privateDnsZones[3].id
output workspaceDnsZoneIds array = [
  privateDnsZones[4].id
  privateDnsZones[5].id
]

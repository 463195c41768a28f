// Private endpoints (with DNS zone groups) for the storage blob service, Key Vault and the
// container registry, in the private-endpoints subnet (privateNetworking=true).

@description('Azure region.')
param location string

@description('Name prefix of the endpoints.')
param namePrefix string

@description('Subnet of the private endpoints.')
param subnetId string

@description('Resource id of the storage account.')
param storageAccountId string

@description('Resource id of the Key Vault.')
param keyVaultId string

@description('Resource id of the container registry.')
param registryId string

@description('Private DNS zone of blob endpoints.')
param blobDnsZoneId string

@description('Private DNS zone of Key Vault.')
param vaultDnsZoneId string

@description('Private DNS zone of the registry.')
param registryDnsZoneId string

@description('Tags applied to every resource.')
param tags object

var endpoints = [
  {
    name: 'blob'
    resourceId: storageAccountId
    groupId: 'blob'
    zoneId: blobDnsZoneId
  }
  {
    name: 'vault'
    resourceId: keyVaultId
    groupId: 'vault'
    zoneId: vaultDnsZoneId
  }
  {
    name: 'registry'
    resourceId: registryId
    groupId: 'registry'
    zoneId: registryDnsZoneId
  }
]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for endpoint in endpoints: {
  name: '${namePrefix}-${endpoint.name}-pe'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: '${namePrefix}-${endpoint.name}'
        properties: {
          privateLinkServiceId: endpoint.resourceId
          groupIds: [
            endpoint.groupId
          ]
        }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.name
        properties: {
          privateDnsZoneId: endpoint.zoneId
        }
      }
    ]
  }
}]

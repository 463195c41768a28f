// Private endpoints (with DNS zone groups) in the private-endpoints subnet (privateNetworking=true):
// the datastore account's blob and queue services (the trainer, the sweep runners and the
// scoring cluster), Key Vault, the container registry, and the Azure ML workspace (Azure ML
// requires it for compute without public IP addresses). Each zone is linked to the VNet in
// network.bicep, so the services' public host names resolve to these private addresses there.

@description('Azure region.')
param location string

@description('Name prefix of the endpoints.')
param namePrefix string

@description('Subnet of the private endpoints.')
param subnetId string

@description('Resource id of the datastore storage account.')
param storageAccountId string

@description('Resource id of the Key Vault.')
param keyVaultId string

@description('Resource id of the container registry.')
param registryId string

@description('Resource id of the Azure ML workspace.')
param workspaceId string

@description('Private DNS zone of blob endpoints.')
param blobDnsZoneId string

@description('Private DNS zone of queue endpoints.')
param queueDnsZoneId string

@description('Private DNS zone of Key Vault.')
param vaultDnsZoneId string

@description('Private DNS zone of the registry.')
param registryDnsZoneId string

@description('Private DNS zones of the workspace (api and notebooks).')
param workspaceDnsZoneIds array

@description('Tags applied to every resource.')
param tags object

// groupId: the private-link sub-resource (Microsoft's "What is a private endpoint?", Private-link resource).
var endpoints = [
  {
    name: 'blob'
    resourceId: storageAccountId
    groupId: 'blob'
    zoneIds: [
      blobDnsZoneId
    ]
  }
  {
    name: 'queue'
    resourceId: storageAccountId
    groupId: 'queue'
    zoneIds: [
      queueDnsZoneId
    ]
  }
  {
    name: 'vault'
    resourceId: keyVaultId
    groupId: 'vault'
    zoneIds: [
      vaultDnsZoneId
    ]
  }
  {
    name: 'registry'
    resourceId: registryId
    groupId: 'registry'
    zoneIds: [
      registryDnsZoneId
    ]
  }
  {
    name: 'workspace'
    resourceId: workspaceId
    groupId: 'amlworkspace'
    zoneIds: workspaceDnsZoneIds
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
    privateDnsZoneConfigs: [for (zoneId, j) in endpoint.zoneIds: {
      name: '${endpoint.name}-${j}'
      properties: {
        privateDnsZoneId: zoneId
      }
    }]
  }
}]

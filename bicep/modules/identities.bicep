// User-assigned identities: one for the Batch pool nodes (writes model blobs), one for the
// Data Factory's Batch linked service (submits jobs), one for Azure ML compute clusters
// (reads the datastore, writes scoring output). Their roles are in roles.bicep.

@description('Azure region.')
param location string

@description('Name of the Batch pool identity.')
param poolIdentityName string

@description('Name of the Data Factory identity used by the Batch linked service.')
param factoryIdentityName string

@description('Name of the identity for Azure ML compute clusters.')
param amlComputeIdentityName string

@description('Tags applied to every resource.')
param tags object

resource poolIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: poolIdentityName
  location: location
  tags: tags
}

resource factoryIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: factoryIdentityName
  location: location
  tags: tags
}

resource amlComputeIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: amlComputeIdentityName
  location: location
  tags: tags
}

output poolIdentityId string = poolIdentity.id
output poolIdentityClientId string = poolIdentity.properties.clientId
output poolIdentityPrincipalId string = poolIdentity.properties.principalId
output factoryIdentityId string = factoryIdentity.id
output factoryIdentityPrincipalId string = factoryIdentity.properties.principalId
output amlComputeIdentityId string = amlComputeIdentity.id
output amlComputeIdentityClientId string = amlComputeIdentity.properties.clientId

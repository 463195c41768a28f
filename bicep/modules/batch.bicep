// Batch account (auto-storage through its managed identity, Entra ID auth only) and the
// DSVM pool that runs the trainer: user-assigned identity, autoscale to zero when idle,
// and a pool-scope admin start task installing trainer/requirements.txt into the fixed
// virtualenv the ADF activity calls (/opt/iris-trainer/venv/bin/python).

@description('Azure region.')
param location string

@description('Batch account name.')
param batchAccountName string

@description('Pool id (BATCH_POOL_ID).')
param poolId string

@description('Resource id of the auto-storage account.')
param storageAccountId string

@description('Resource id of the pool nodes\' user-assigned identity.')
param poolIdentityId string

@description('VM size of the pool nodes.')
param vmSize string

@description('Most nodes autoscale may allocate.')
@minValue(1)
@maxValue(20)
param maxNodes int

@description('Subnet of the pool nodes (private networking); empty for Batch-managed networking.')
param subnetId string

@description('Tags applied to every resource.')
param tags object

// The DSVM image (see docs/azure.md for checking it with `az batch pool supported-images list`).
var imageReference = {
  publisher: 'microsoft-dsvm'
  offer: 'ubuntu-hpc'
  sku: '2204'
  version: 'latest'
}
var nodeAgentSkuId = 'batch.node.ubuntu 22.04'

// Zero nodes while nothing is pending; one node per pending task up to maxNodes otherwise.
// The first sample makes a new task start a node at the next evaluation (every 5 minutes).
var autoScaleFormula = join([
  '$pending = max(0, $PendingTasks.GetSample(1));'
  '$recent = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 5) < 70 ? $pending : max($pending, avg($PendingTasks.GetSample(TimeInterval_Minute * 5)));'
  '$TargetDedicatedNodes = min(${maxNodes}, $recent);'
  '$TargetLowPriorityNodes = 0;'
  '$NodeDeallocationOption = taskcompletion;'
], '\n')

var networkConfiguration = empty(subnetId) ? null : {
  subnetId: subnetId
  publicIPAddressConfiguration: {
    provision: 'NoPublicIPAddresses'
  }
}

resource batchAccount 'Microsoft.Batch/batchAccounts@2024-07-01' = {
  // checkov:skip=CKV_AZURE_76: Microsoft-managed keys; customer-managed keys need a key-rotation process this project does not run.
  name: batchAccountName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    poolAllocationMode: 'BatchService'
    publicNetworkAccess: 'Enabled'
    allowedAuthenticationModes: [
      'AAD'
      'TaskAuthenticationToken'
    ]
    autoStorage: {
      storageAccountId: storageAccountId
      authenticationMode: 'BatchAccountManagedIdentity'
      nodeIdentityReference: {
        resourceId: poolIdentityId
      }
    }
  }
}

resource pool 'Microsoft.Batch/batchAccounts/pools@2024-07-01' = {
  parent: batchAccount
  name: poolId
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${poolIdentityId}': {}
    }
  }
  properties: {
    displayName: 'Iris trainer (DSVM)'
    vmSize: vmSize
    taskSlotsPerNode: 1
    interNodeCommunication: 'Disabled'
    targetNodeCommunicationMode: 'Simplified'
    deploymentConfiguration: {
      virtualMachineConfiguration: {
        imageReference: imageReference
        nodeAgentSkuId: nodeAgentSkuId
      }
    }
    scaleSettings: {
      autoScale: {
        formula: autoScaleFormula
        evaluationInterval: 'PT5M'
      }
    }
    networkConfiguration: networkConfiguration
    startTask: {
      commandLine: '/bin/bash -c "echo $START_TASK_B64 | base64 -d > start-task.sh && /bin/bash start-task.sh"'
      environmentSettings: [
        {
          name: 'START_TASK_B64'
          value: base64(loadTextContent('../pool-start-task.sh'))
        }
        {
          name: 'TRAINER_REQUIREMENTS_B64'
          value: base64(loadTextContent('../../trainer/requirements.txt'))
        }
      ]
      userIdentity: {
        autoUser: {
          scope: 'Pool'
          elevationLevel: 'Admin'
        }
      }
      maxTaskRetryCount: 2
      waitForSuccess: true
    }
  }
}

output batchAccountName string = batchAccount.name
output batchAccountId string = batchAccount.id
output batchAccountUrl string = 'https://${batchAccount.properties.accountEndpoint}'
output batchPrincipalId string = batchAccount.identity.principalId
output poolId string = pool.name

#!/usr/bin/env bash
# make deploy-infra | what-if | destroy: the Bicep deployment with the Azure CLI, or with
# IAC=terraform the Terraform stack of terraform/ (same checks, same .env).
#
#   bicep/azure.sh deploy [name=value ...]    az deployment sub create (terraform apply), then .env from its outputs
#   bicep/azure.sh what-if [name=value ...]   what a deployment would change, changing nothing (terraform plan)
#   bicep/azure.sh destroy                    deletes the resource group after asking (terraform destroy)
#
# Settings (environment; the Makefile passes them): IAC (bicep or terraform), LOCATION,
# PREFIX, PRIVATE_NETWORKING (true needs ALLOWED_IP), ALLOWED_IP, ENV_FILE (.env), STATE_DIR
# (.local, where the deployment's JSON is kept), PYTHON, PARAMS (more template parameters or
# Terraform variables, "name=value ..."), YES=1 (destroy without asking, for automation),
# TF_BACKEND_CONFIG (Terraform: a backend settings file for terraform/backend.tf; local state
# without it). Nothing secret is passed on a command line: the CLI uses your `az login`, the
# template reads the storage key itself.
set -euo pipefail

cd "$(dirname "$0")/.."
action="${1:-}"
LOCATION="${LOCATION:-westeurope}"
PREFIX="${PREFIX:-irisops}"
PRIVATE_NETWORKING="${PRIVATE_NETWORKING:-false}"
ALLOWED_IP="${ALLOWED_IP:-}"
ENV_FILE="${ENV_FILE:-.env}"
STATE_DIR="${STATE_DIR:-.local}"
PYTHON="${PYTHON:-python3}"
IAC="${IAC:-bicep}"
DEPLOYMENT_NAME="iris-infra-${PREFIX}"
TEMPLATE="bicep/main.bicep"
TF_DIR="terraform"

die() {
  echo "error: $1" >&2
  [ -n "${2:-}" ] && echo "  -> $2" >&2
  exit 2
}

# Checked before anything reaches Azure: names are built from the prefix (Data Factory
# '<prefix>-adf-<suffix>' allows letters, digits and single hyphens; Key Vault 3-24
# characters; storage, Batch and ACR lowercase letters and digits only).
check_prefix() {
  [[ "$PREFIX" =~ ^[a-z][a-z0-9]{2,9}$ ]] ||
    die "PREFIX '$PREFIX' is not 3-10 lowercase letters or digits starting with a letter." \
        "Resource names (storage, Key Vault, Data Factory, Batch, registry) are built from it; pick e.g. PREFIX=irisops."
}

# Private mode (docs/azure.md, "Private networking") denies the datastore, Key Vault and
# registry to every public address but ALLOWED_IP: without it `invoke`, `jobs download` and the
# set-up from this machine would be refused, so it is required (one public IPv4 address).
# A public IPv4 address: four decimal octets without leading zeros, outside the RFC 1918
# private ranges the storage firewall refuses in IP rules (Microsoft's "Guidelines and
# limitations for the Azure Storage firewall") and outside the ranges that are never the
# address Azure sees ("this network", loopback, link-local, carrier-grade NAT, multicast, reserved).
public_ipv4() {
  local octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])' a b
  [[ "$1" =~ ^$octet\.$octet\.$octet\.$octet$ ]] || return 1
  a="${BASH_REMATCH[1]}" b="${BASH_REMATCH[2]}"
  (( a == 0 || a == 10 || a == 127 || a >= 224 )) && return 1
  (( (a == 172 && b >= 16 && b <= 31) || (a == 192 && b == 168) || (a == 169 && b == 254) )) && return 1
  (( a == 100 && b >= 64 && b <= 127 )) && return 1
  return 0
}

check_private_networking() {
  case "$PRIVATE_NETWORKING" in
    false) ;;
    true)
      public_ipv4 "$ALLOWED_IP" ||
        die "PRIVATE_NETWORKING=true needs ALLOWED_IP, your public IPv4 address${ALLOWED_IP:+ (not '$ALLOWED_IP': a private, loopback or reserved address, or not an IPv4 address)}." \
            "The firewalls deny every other public address; find yours with e.g. 'curl -s https://ifconfig.me' and pass ALLOWED_IP=<address>." ;;
    *) die "PRIVATE_NETWORKING must be true or false, not '$PRIVATE_NETWORKING'." ;;
  esac
}

check_iac() {
  case "$IAC" in
    bicep|terraform) ;;
    *) die "IAC must be bicep or terraform, not '$IAC'." "Bicep is the default; IAC=terraform deploys terraform/ (docs/azure.md, 'Bicep or Terraform')." ;;
  esac
}

# Extra template parameters (arguments and PARAMS): name=value, a parameter main.bicep
# (a variable terraform/variables.tf) declares, and not one this script sets from its own settings.
EXTRA=()
extra_parameters() {
  local item name declared items=() source own example
  if [ "$IAC" = terraform ]; then
    source="$TF_DIR/variables.tf"
    declared=" $(sed -n 's/^variable "\([A-Za-z0-9_]*\)".*/\1/p' "$source" | tr '\n' ' ')"
    own=" location prefix private_networking allowed_ip_address deployer_principal_id deployer_principal_type "
    example="factory_batch_role=dataContributor"
  else
    source="$TEMPLATE"
    declared=" $(sed -n 's/^param \([A-Za-z0-9_]*\) .*/\1/p' "$source" | tr '\n' ' ')"
    own=" location prefix privateNetworking allowedIpAddress deployerPrincipalId deployerPrincipalType keyVaultCreateMode "
    example="factoryBatchRole=dataContributor"
  fi
  read -r -a items <<<"${PARAMS:-}"
  items+=("$@")
  for item in ${items[@]+"${items[@]}"}; do
    [[ "$item" =~ ^([A-Za-z][A-Za-z0-9_]*)=(.*)$ ]] ||
      die "template parameter '$item' is not name=value." "Example: bicep/azure.sh deploy $example"
    name="${BASH_REMATCH[1]}"
    [[ "$own" == *" $name "* ]] &&
      die "parameter '$name' is set by this script." "Use LOCATION, PREFIX, PRIVATE_NETWORKING or ALLOWED_IP instead; the others are found out."
    [[ "$declared" == *" $name "* ]] ||
      die "$source has no parameter '$name'." "Its parameters:$declared"
    EXTRA+=("$item")
  done
}

# Terraform: on PATH, initialised in terraform/ (local state, or the backend of
# terraform/backend.tf configured by TF_BACKEND_CONFIG), and told the subscription of `az login`.
require_terraform() {
  command -v terraform >/dev/null 2>&1 ||
    die "Terraform ('terraform') is not installed or not on PATH." \
        "Install Terraform 1.11 or newer (see docs/azure.md, 'Bicep or Terraform'), or deploy with Bicep: make deploy-infra (without IAC=terraform)."
}

terraform_init() {
  local backend=()
  if [ -n "${TF_BACKEND_CONFIG:-}" ]; then
    [ -f "$TF_DIR/backend.tf" ] ||
      die "TF_BACKEND_CONFIG is set but $TF_DIR/backend.tf does not exist." "Copy $TF_DIR/backend.tf.example to $TF_DIR/backend.tf (docs/azure.md, 'Terraform state')."
    [ -f "$TF_BACKEND_CONFIG" ] || die "TF_BACKEND_CONFIG names '$TF_BACKEND_CONFIG', which is not a file."
    backend=("-backend-config=$(cd "$(dirname "$TF_BACKEND_CONFIG")" && pwd)/$(basename "$TF_BACKEND_CONFIG")")
  fi
  if [ -z "${ARM_SUBSCRIPTION_ID:-}" ]; then  # azurerm 4 needs it; the one `az login` selected
    ARM_SUBSCRIPTION_ID="$(az account show --query id -o tsv)" || die "cannot read the subscription of 'az login'."
    export ARM_SUBSCRIPTION_ID
  fi
  terraform -chdir="$TF_DIR" init -input=false ${backend[@]+"${backend[@]}"}
}

terraform_variables() {
  local item
  TF_VARS=(
    -var "location=$LOCATION"
    -var "prefix=$PREFIX"
    -var "private_networking=$PRIVATE_NETWORKING"
    -var "allowed_ip_address=$ALLOWED_IP"
    -var "deployer_principal_id=${DEPLOYER_ID:-}"
    -var "deployer_principal_type=${DEPLOYER_TYPE:-User}"
  )
  for item in ${EXTRA[@]+"${EXTRA[@]}"}; do
    TF_VARS+=(-var "$item")
  done
}

# A vault of this prefix and region deleted by `make destroy` stays soft-deleted (purge
# protection) for its retention days under the same name: recover it instead of failing on
# the name. The name is '<prefix>-kv-<suffix>', the suffix unique per subscription, prefix and region.
key_vault_create_mode() {
  local deleted
  deleted="$(az keyvault list-deleted --resource-type vault \
    --query "[?starts_with(name, '${PREFIX}-kv-') && properties.location=='${LOCATION}'].name" -o tsv 2>/dev/null || true)"
  if [ -n "$deleted" ]; then
    echo "Key Vault '${deleted%%$'\n'*}' is soft-deleted from an earlier deployment; recovering it."
    KV_CREATE_MODE="recover"
  else
    KV_CREATE_MODE="default"
  fi
}

require_az() {
  command -v az >/dev/null 2>&1 ||
    die "the Azure CLI ('az') is not installed or not on PATH." \
        "Install it (see docs/azure.md, 'Prerequisites'), run 'az login', then retry."
  local account
  if ! account="$(az account show --query '[name, id, user.name]' -o tsv 2>/dev/null)" || [ -z "$account" ]; then
    die "the Azure CLI is not logged in." \
        "Run 'az login' (and 'az account set --subscription <id>' to pick the subscription), then retry."
  fi
  echo "Azure subscription: $(cut -f1 <<<"$account") ($(cut -f2 <<<"$account")), signed in as $(cut -f3 <<<"$account")"
}

# Object id of whoever deploys, granted blob access to stage files and read logs. From
# Microsoft Graph, else from the "oid" claim of an access token (a service principal often
# may not read Graph); the token goes through a pipe, never onto a command line. Empty (the
# template then skips that role) if neither works.
deployer_principal() {
  local type kind id=""
  type="$(az account show --query user.type -o tsv 2>/dev/null || true)"
  if [ "$type" = "servicePrincipal" ]; then
    kind="ServicePrincipal"
    id="$(az ad sp show --id "$(az account show --query user.name -o tsv)" --query id -o tsv 2>/dev/null || true)"
  else
    kind="User"
    id="$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)"
  fi
  if [ -z "$id" ]; then
    id="$(az account get-access-token --query accessToken -o tsv 2>/dev/null | "$PYTHON" -c '
import base64, json, sys
try:
    payload = sys.stdin.read().strip().split(".")[1]
    print(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("oid", ""))
except Exception:
    pass' || true)"
  fi
  if [ -z "$id" ]; then
    echo "warning: could not find your object id; grant yourself 'Storage Blob Data Contributor' on the storage account to stage files." >&2
  fi
  DEPLOYER_ID="$id"
  DEPLOYER_TYPE="$kind"
}

parameters() {
  key_vault_create_mode
  TEMPLATE_PARAMS=(
    "location=$LOCATION"
    "prefix=$PREFIX"
    "privateNetworking=$PRIVATE_NETWORKING"
    "allowedIpAddress=$ALLOWED_IP"
    "deployerPrincipalId=$DEPLOYER_ID"
    "deployerPrincipalType=$DEPLOYER_TYPE"
    "keyVaultCreateMode=$KV_CREATE_MODE"
    ${EXTRA[@]+"${EXTRA[@]}"}
  )
}

# destroy: asks unless YES=1. confirm <prompt> <expected answer> <verb> <past participle>
confirm() {
  local answer
  if [ "${YES:-}" != "1" ]; then
    [ -t 0 ] || die "refusing to $3 without confirmation." "Run it in a terminal, or set YES=1."
    read -r -p "$1" answer
    [ "$answer" = "$2" ] || die "not confirmed; nothing $4."
  fi
}

# After a destroy, .env points back at the local target.
back_to_local() {
  if [ -f "$ENV_FILE" ] && grep -q '^TARGET=azure' "$ENV_FILE"; then
    reset_target
    echo "Set TARGET=local in $ENV_FILE."
  fi
}

usage() {
  echo "usage: $0 deploy|what-if [name=value ...] | destroy" >&2
  exit 2
}

# `sed -i` differs between GNU and BSD (macOS): rewrite through a temporary file instead.
reset_target() {
  local tmp="$ENV_FILE.tmp.$$"
  sed 's/^TARGET=azure$/TARGET=local/' "$ENV_FILE" >"$tmp" && mv "$tmp" "$ENV_FILE"
}

check_iac
case "$action" in
  deploy|what-if)
    shift
    check_prefix
    check_private_networking
    extra_parameters "$@"
    ;;
  destroy) check_prefix ;;
esac

# Terraform: the same checks above, then terraform instead of az deployment.
if [ "$IAC" = terraform ]; then
  case "$action" in
    deploy|what-if|destroy) require_terraform; require_az ;;
  esac
  case "$action" in
    deploy)
      deployer_principal
      terraform_variables
      terraform_init
      mkdir -p "$STATE_DIR"
      out="$STATE_DIR/terraform-outputs-${PREFIX}.json"
      echo "Applying $TF_DIR/ in $LOCATION (prefix $PREFIX, private networking $PRIVATE_NETWORKING); this takes 10-20 minutes..."
      terraform -chdir="$TF_DIR" apply -input=false -auto-approve "${TF_VARS[@]}"
      terraform -chdir="$TF_DIR" output -json >"$out"
      "$PYTHON" -m bicep.env_writer "$out" --env-file "$ENV_FILE"
      echo "Done. Next: python -m adf trigger (trains on the pool; the first node takes a few minutes to start)."
      ;;
    what-if)
      deployer_principal
      terraform_variables
      terraform_init
      terraform -chdir="$TF_DIR" plan -input=false "${TF_VARS[@]}"
      ;;
    destroy)
      terraform_variables
      echo "This destroys everything terraform/ deployed for prefix $PREFIX (data, models, pool, factory, workspace)."
      confirm "Type the prefix to confirm: " "$PREFIX" destroy destroyed
      terraform_init
      # Resource Manager refuses to delete a Key Vault secret (Azure/terraform-provider-azapi#879):
      # forget it, and it goes with the vault (soft-deleted with it).
      secret="module.storage_key_secret.azapi_resource.secret"
      if [ -n "$(terraform -chdir="$TF_DIR" state list "$secret")" ]; then
        terraform -chdir="$TF_DIR" state rm "$secret"
      fi
      terraform -chdir="$TF_DIR" destroy -input=false -auto-approve "${TF_VARS[@]}"
      echo "Destroyed. The Key Vault stays soft-deleted (purge protection) for 7 days; the next deploy recovers it."
      back_to_local
      ;;
    *) usage ;;
  esac
  exit 0
fi

case "$action" in
  deploy)
    require_az
    deployer_principal
    parameters
    mkdir -p "$STATE_DIR"
    out="$STATE_DIR/deployment-${PREFIX}.json"
    echo "Deploying $TEMPLATE as '$DEPLOYMENT_NAME' in $LOCATION (prefix $PREFIX, private networking $PRIVATE_NETWORKING); this takes 10-20 minutes..."
    az deployment sub create --name "$DEPLOYMENT_NAME" --location "$LOCATION" \
      --template-file "$TEMPLATE" --parameters "${TEMPLATE_PARAMS[@]}" --only-show-errors -o json >"$out"
    "$PYTHON" -m bicep.env_writer "$out" --env-file "$ENV_FILE"
    echo "Done. Next: python -m adf trigger (trains on the pool; the first node takes a few minutes to start)."
    ;;
  what-if)
    require_az
    deployer_principal
    parameters
    az deployment sub what-if --name "$DEPLOYMENT_NAME" --location "$LOCATION" \
      --template-file "$TEMPLATE" --parameters "${TEMPLATE_PARAMS[@]}" --only-show-errors
    ;;
  destroy)
    require_az
    group=""
    if [ -f "$ENV_FILE" ]; then
      group="$(sed -n 's/^AZURE_RESOURCE_GROUP=//p' "$ENV_FILE" | tail -n1 | tr -d '"')"
    fi
    group="${group:-rg-$PREFIX}"
    if [ "$(az group exists --name "$group" -o tsv)" != "true" ]; then
      echo "Resource group '$group' does not exist; nothing to delete."
      exit 0
    fi
    echo "This deletes resource group '$group' and everything in it (data, models, pool, factory, workspace)."
    confirm "Type the resource group name to confirm: " "$group" delete deleted
    az group delete --name "$group" --yes
    echo "Deleted '$group'. The Key Vault stays soft-deleted (purge protection) for 7 days; see docs/azure.md, 'Tear down'."
    back_to_local
    ;;
  *) usage ;;
esac

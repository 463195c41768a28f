#!/usr/bin/env bash
# make deploy-infra | what-if | destroy: the Bicep deployment with the Azure CLI.
#
#   bicep/azure.sh deploy    az deployment sub create, then .env from its outputs
#   bicep/azure.sh what-if   what a deployment would change, changing nothing
#   bicep/azure.sh destroy   deletes the resource group after asking
#
# Settings (environment; the Makefile passes them): LOCATION, PREFIX, PRIVATE_NETWORKING
# (true|false), ALLOWED_IP (your public IP, private mode), ENV_FILE (.env), STATE_DIR
# (.local, where the deployment's JSON is kept), PYTHON,
# YES=1 (destroy without asking, for automation). Nothing secret is passed on a command
# line: the CLI uses your `az login`, the template reads the storage key itself.
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
DEPLOYMENT_NAME="iris-infra-${PREFIX}"
TEMPLATE="bicep/main.bicep"

die() {
  echo "error: $1" >&2
  [ -n "${2:-}" ] && echo "  -> $2" >&2
  exit 2
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
  PARAMS=(
    "location=$LOCATION"
    "prefix=$PREFIX"
    "privateNetworking=$PRIVATE_NETWORKING"
    "allowedIpAddress=$ALLOWED_IP"
    "deployerPrincipalId=$DEPLOYER_ID"
    "deployerPrincipalType=$DEPLOYER_TYPE"
  )
}

case "$action" in
  deploy)
    require_az
    deployer_principal
    parameters
    mkdir -p "$STATE_DIR"
    out="$STATE_DIR/deployment-${PREFIX}.json"
    echo "Deploying $TEMPLATE as '$DEPLOYMENT_NAME' in $LOCATION (prefix $PREFIX, private networking $PRIVATE_NETWORKING); this takes 10-20 minutes..."
    az deployment sub create --name "$DEPLOYMENT_NAME" --location "$LOCATION" \
      --template-file "$TEMPLATE" --parameters "${PARAMS[@]}" --only-show-errors -o json >"$out"
    "$PYTHON" -m bicep.env_writer "$out" --env-file "$ENV_FILE"
    echo "Done. Next: python -m adf trigger (trains on the pool; the first node takes a few minutes to start)."
    ;;
  what-if)
    require_az
    deployer_principal
    parameters
    az deployment sub what-if --name "$DEPLOYMENT_NAME" --location "$LOCATION" \
      --template-file "$TEMPLATE" --parameters "${PARAMS[@]}" --only-show-errors
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
    if [ "${YES:-}" != "1" ]; then
      [ -t 0 ] || die "refusing to delete without confirmation." "Run it in a terminal, or set YES=1."
      read -r -p "Type the resource group name to confirm: " answer
      [ "$answer" = "$group" ] || die "not confirmed; nothing deleted."
    fi
    az group delete --name "$group" --yes
    echo "Deleted '$group'. The Key Vault stays soft-deleted (purge protection) for 7 days; see docs/azure.md, 'Tear down'."
    if [ -f "$ENV_FILE" ] && grep -q '^TARGET=azure' "$ENV_FILE"; then
      sed -i 's/^TARGET=azure$/TARGET=local/' "$ENV_FILE"
      echo "Set TARGET=local in $ENV_FILE."
    fi
    ;;
  *)
    echo "usage: $0 deploy|what-if|destroy" >&2
    exit 2
    ;;
esac

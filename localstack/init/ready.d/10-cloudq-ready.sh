#!/bin/bash
# LocalStack runs this once it serves requests (READY stage). It creates nothing: the stack is
# deployed from the host with `cdklocal bootstrap` + `cdklocal deploy` (docs/deploy.md, "LocalStack").
# It checks what that deploy needs and fails loudly when something is missing, so the cause shows
# in `docker compose logs` and in GET /_localstack/init/ready (script state ERROR) instead of as a
# Lambda function that never runs. The two CLOUDQ_* overrides exist only to try the script outside
# the container.
set -euo pipefail

endpoint="${CLOUDQ_HOOK_ENDPOINT:-http://localhost:4566}"
docker_sock="${CLOUDQ_HOOK_DOCKER_SOCK:-/var/run/docker.sock}"
# What the deployed stack and `cdklocal bootstrap` call: keep in step with SERVICES in
# docker-compose.yml.
required="cloudformation iam sts ssm s3 sqs dynamodb lambda logs cloudwatch events scheduler"

fail() {
    echo "cloudq init hook: $*" >&2
    exit 1
}

health="$(curl -fsS "$endpoint/_localstack/health")" || fail "no answer from $endpoint/_localstack/health"
missing=""
for service in $required; do
    # "disabled" (not in SERVICES) or absent: CloudFormation would fail half-way through the stack
    if ! grep -Eq "\"$service\": *\"(available|running|starting)\"" <<<"$health"; then
        missing="$missing $service"
    fi
done
[ -z "$missing" ] || fail "services not enabled:$missing (add them to SERVICES in docker-compose.yml)"

# Lambda functions run in sibling containers: without the host's Docker socket they never start.
[ -S "$docker_sock" ] || fail "$docker_sock is not mounted: Lambda workers cannot start"
ping="$(curl -fsS --max-time 5 --unix-socket "$docker_sock" http://localhost/_ping)" \
    || fail "Docker does not answer on $docker_sock: Lambda workers cannot start"
[ "$ping" = "OK" ] || fail "unexpected answer from Docker on $docker_sock: $ping"

echo "cloudq init hook: LocalStack is ready for cdklocal bootstrap and cdklocal deploy"

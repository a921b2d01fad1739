#!/bin/bash
# LocalStack READY hook: creates the event store's DynamoDB table and S3 bucket.
#
# Mounted into /etc/localstack/init/ready.d/ by localstack/docker-compose.yml, so
# LocalStack runs it once its services accept requests. Safe to run again: what
# already exists is kept, and the lifecycle rule is simply put again.
#
# The schema matches EventStore.create_schema(): pk (S, HASH) + sk (N, RANGE),
# PAY_PER_REQUEST, plus a bucket for large change sets.
set -euo pipefail

TABLE="${EVENTSTORE_TABLE:-events}"
BUCKET="${EVENTSTORE_BUCKET:-events-changesets}"

# awslocal talks to this LocalStack; it still wants credentials and a region.
# LocalStack accepts any alphanumeric key id and ignores the secret.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}"
REGION="$AWS_DEFAULT_REGION"

log() { echo "[10-create-schema] $*"; }

table_exists() {
  awslocal dynamodb describe-table --table-name "$TABLE" > /dev/null 2>&1
}

bucket_exists() {
  awslocal s3api head-bucket --bucket "$BUCKET" > /dev/null 2>&1
}

# -- DynamoDB table ----------------------------------------------------------------
if table_exists; then
  log "table $TABLE already exists"
else
  log "creating table $TABLE"
  if ! awslocal dynamodb create-table \
      --table-name "$TABLE" \
      --attribute-definitions AttributeName=pk,AttributeType=S AttributeName=sk,AttributeType=N \
      --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
      --billing-mode PAY_PER_REQUEST \
      > /dev/null; then
    # Someone else may have created it meanwhile; only a missing table is a failure.
    table_exists || { log "could not create table $TABLE"; exit 1; }
  fi
fi
awslocal dynamodb wait table-exists --table-name "$TABLE"

# -- S3 bucket ---------------------------------------------------------------------
if bucket_exists; then
  log "bucket $BUCKET already exists"
else
  log "creating bucket $BUCKET in $REGION"
  create_args=(--bucket "$BUCKET")
  # us-east-1 takes no location constraint; every other region requires one.
  if [[ "$REGION" != "us-east-1" ]]; then
    create_args+=(--create-bucket-configuration "LocationConstraint=$REGION")
  fi
  if ! awslocal s3api create-bucket "${create_args[@]}" > /dev/null; then
    bucket_exists || { log "could not create bucket $BUCKET"; exit 1; }
  fi
fi

# Multipart uploads that are never completed or aborted keep their parts (and, on
# AWS, their cost) forever; drop them a day after they were started.
log "putting lifecycle rule on $BUCKET (abort incomplete multipart uploads after 1 day)"
awslocal s3api put-bucket-lifecycle-configuration \
  --bucket "$BUCKET" \
  --lifecycle-configuration '{
    "Rules": [
      {
        "ID": "abort-incomplete-multipart-uploads",
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}
      }
    ]
  }'

log "schema ready: table $TABLE, bucket $BUCKET"

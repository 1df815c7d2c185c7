"""cloudq: Celery's API on SQS and DynamoDB."""

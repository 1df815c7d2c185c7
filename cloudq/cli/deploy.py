"""``cloudq deploy``: the app's CloudFormation template, or a cloud assembly for the CDK CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from cloudq.cli import app_options, cli
from cloudq.errors import CloudqError, ConfigError


@cli.command()
@app_options
@click.option("--code", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=".", show_default=True,
              help="Directory holding the app's packages; bundled for the workers.")
@click.option("--workers", type=click.Choice(["lambda", "fargate"]), default="lambda",
              show_default=True, help="Run tasks in Lambda functions or Fargate tasks.")
@click.option("--print", "print_template", is_flag=True,
              help="Print the CloudFormation template (JSON) and stop.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="cdk.out",
              show_default=True, help="Where the cloud assembly is written.")
@click.option("--stack", "stack_name", default="Cloudq", show_default=True,
              help="The CloudFormation stack's name.")
@click.option("--dev", is_flag=True,
              help="A throw-away stack: table and bucket are deleted with it (default: kept).")
@click.option("--architecture", type=click.Choice(["x86_64", "arm64"]), default="x86_64",
              show_default=True, help="CPU architecture of the workers.")
def deploy(app_path: str | None, endpoint_url: str | None, region: str | None, code: Path,
           workers: str, print_template: bool, out: Path, stack_name: str, dev: bool,
           architecture: str) -> None:
    """Synthesize the stack that deploys the app: queues and dead-letter queues, result table,
    payload bucket, workers, EventBridge schedules, alarms, least-privilege IAM.

    Needs the `cdk` extra (pip install 'cloudq[cdk]') and node; no AWS account and no Docker.
    The workers' code is the --code directory plus its dependencies, installed with pip for
    Lambda's platform. Deploy the assembly it writes with the CDK CLI.

    \b
    Examples:
      cloudq deploy -A shop.tasks:app --print > template.json
      cloudq deploy -A shop.tasks:app --code src --out cdk.out
      npx aws-cdk@2 deploy --app cdk.out          # then deploy what it wrote
      cloudq deploy -A shop.tasks:app --workers fargate --dev --region eu-west-1
    """
    app_path = app_path or os.environ.get("CLOUDQ_APP")
    if endpoint_url:
        raise click.UsageError("--endpoint-url: `cloudq deploy` only writes a template; to deploy "
                               "into LocalStack use cdklocal (docs/deploy.md, LocalStack)")
    if region:
        os.environ["CDK_DEFAULT_REGION"] = region
    if not app_path:
        raise click.UsageError("no app given: pass -A module:attr (e.g. -A shop.tasks:app) "
                               "or set CLOUDQ_APP")
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    try:
        template = _synth(app_path, code=code, workers=workers, out=out, stack_name=stack_name,
                          production=not dev, architecture=architecture)
    except CloudqError as exc:
        raise click.ClickException(str(exc)) from exc
    if print_template:
        click.echo(json.dumps(template, indent=1))
        return
    resources = template.get("Resources", {})
    click.echo(f"wrote the cloud assembly of stack {stack_name} to {out}/ "
               f"({len(resources)} resources); deploy it with:", err=True)
    click.echo(f"  npx aws-cdk@2 deploy --app {out}", err=True)


def _synth(app_path: str, *, code: Path, workers: str, out: Path, stack_name: str,
           production: bool, architecture: str) -> dict[str, Any]:
    try:
        from cloudq.cdk.stack import synth
    except ImportError as exc:
        raise ConfigError(f"`cloudq deploy` needs the cdk extra: pip install 'cloudq[cdk]' "
                          f"({exc})") from exc
    return synth(stack_name, outdir=out, app=app_path, code=code, workers=workers,
                 production=production, architecture=architecture)

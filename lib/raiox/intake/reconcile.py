"""Reconciliation with Jotform: ask its API for each accepted form's recent submissions and record every one
that never became a case (a webhook that was never delivered, or refused while Raiox was down) exactly as
its webhook would have. Running it twice records nothing new."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from raiox.adapters.fetch import split_list
from raiox.adapters.jotform_client import JotformClient, JotformError
from raiox.adapters.jotform_payload import submission_from_answers, valid_id
from raiox.errors import NotConfigured, RaioxError
from raiox.intake.recording import check, record
from raiox.intake.submission import ImageSource, Submission
from raiox.repository import cases
from raiox.repository import reconciliation as sql
from raiox.services import Services

log = logging.getLogger(__name__)

PAGE = 100
OVERLAP = timedelta(days=1)  # Jotform's times carry no zone: look back far enough to never miss one
KEEP_CALLS = 20  # stop before the account's daily API calls run out; the rest waits for the next run
_JOTFORM_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass
class ReconcileReport:
    forms: list[str] = field(default_factory=list)
    seen: int = 0
    recorded: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)


def _answers(api_answers: dict[str, Any]) -> dict[str, Any]:
    """The API's `{qid: {name, type, answer}}` keyed as rawRequest keys them: `q<qid>_<name>`, and upload
    answers also under their bare name, as the webhook has them."""
    answers: dict[str, Any] = {}
    for qid, item in api_answers.items():
        if not isinstance(item, dict) or "answer" not in item or not isinstance(item.get("name"), str):
            continue
        answers[f"q{qid}_{item['name']}"] = item["answer"]
        if item.get("type") == "control_fileupload":
            answers[item["name"]] = item["answer"]
    return answers


def submission_from_api(item: dict[str, Any], services: Services) -> Submission | None:
    """A submission of the API as the webhook would have delivered it; None when it is not one to record."""
    submission_id, form_id = str(item.get("id") or ""), str(item.get("form_id") or "")
    if not (valid_id(submission_id) and valid_id(form_id)) or item.get("status") == "DELETED":
        return None
    settings = services.settings
    answers = _answers(item.get("answers") or {})
    parsed = submission_from_answers(form_id, submission_id, answers, xray_field=settings.jotform_xray_field,
                                     name_field=settings.jotform_name_field)
    return Submission(source="jotform", submission_id=submission_id, form_id=form_id,
                      submitter_name=parsed.submitter_name, submitter_email=parsed.submitter_email,
                      raw_payload={**parsed.raw_payload(), "reconciled": True},
                      images=[ImageSource(url=url) for url in parsed.upload_urls])


def _reconcile_form(services: Services, client: JotformClient, form_id: str, watermark: datetime | None,
                    report: ReconcileReport, *, since: datetime | None) -> tuple[datetime | None, int]:
    start = since or (watermark - OVERLAP if watermark else None)
    created_after = start.strftime(_JOTFORM_TIME) if start else None
    newest, recorded, offset = watermark, 0, 0
    while True:
        page = client.list_submissions(form_id, created_after=created_after, offset=offset, limit=PAGE)
        for item in page.submissions:
            report.seen += 1
            created = item.get("created_at")
            if isinstance(created, str):
                try:
                    at = datetime.strptime(created, _JOTFORM_TIME).replace(tzinfo=UTC)
                    newest = max(newest, at) if newest else at
                except ValueError:
                    pass
            submission = submission_from_api(item, services)
            if submission is None:
                continue
            with services.db.transaction() as conn:
                if cases.case_by_submission_id(conn, submission.submission_id, "jotform") is not None:
                    continue
            try:
                receipt = record(submission, check(submission, services), services, actor="system:reconcile")
            except RaioxError as refusal:
                log.warning("Jotform submission %s not recorded: %s", submission.submission_id, refusal)
                report.refused += 1
                continue
            if not receipt.duplicate:
                log.info("reconciliation recorded Jotform submission %s as case %s", submission.submission_id,
                         receipt.case_id)
                recorded += 1
        if page.limit_left is not None and page.limit_left < KEEP_CALLS:
            raise JotformError(f"only {page.limit_left} API calls left today; the rest waits", retryable=True)
        if len(page.submissions) < PAGE:
            return newest, recorded
        offset += PAGE


def reconcile(services: Services, *, force: bool = False, since: datetime | None = None) -> ReconcileReport:
    """Reconcile every form of JOTFORM_FORM_IDS whose last run is older than JOTFORM_RECONCILE_MINUTES (or
    all of them with `force`), from a day before each form's newest submission seen (or from `since`)."""
    settings = services.settings
    forms = split_list(settings.jotform_form_ids)
    if not forms or settings.jotform_api_key is None:
        raise NotConfigured("reconciliation needs JOTFORM_FORM_IDS and JOTFORM_API_KEY")
    every = timedelta(0) if force else timedelta(minutes=settings.jotform_reconcile_minutes)
    report = ReconcileReport()
    with requests.Session() as session:
        client = JotformClient(settings.jotform_api_base, settings.jotform_api_key,
                               timeout=settings.notify_timeout_seconds, session=session)
        for form_id in forms:
            with services.db.transaction() as conn:
                due = sql.claim_run(conn, form_id, every)
            if due is None:
                continue
            report.forms.append(form_id)
            newest, recorded, error = due.watermark, 0, None
            try:
                newest, recorded = _reconcile_form(services, client, form_id, due.watermark, report, since=since)
            except JotformError as exc:
                error = f"Jotform: {exc}"
                report.errors.append(f"form {form_id}: {error}")
                log.warning("reconciliation of form %s stopped: %s", form_id, error)
            report.recorded += recorded
            with services.db.transaction() as conn:
                sql.finish_run(conn, form_id, watermark=newest, recorded=recorded, error=error)
    return report


def reconcile_when_due(services: Services) -> ReconcileReport | None:
    """The sweeper's share: reconcile forms that are due, when reconciliation is configured; None when it is not
    configured or no form was due."""
    settings = services.settings
    if not settings.jotform_reconcile_minutes or not settings.jotform_form_ids or settings.jotform_api_key is None:
        return None
    report = reconcile(services)
    return report if report.forms else None

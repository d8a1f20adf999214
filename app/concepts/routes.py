"""Concept API: thin routes over app.concepts (service, views, sharing, rules);
authorization via app.concepts.access."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import (
    APIRouter,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)  # fmt: skip
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.auth.deps import CurrentUser
from app.concepts import basemodel, importing, refit, rules, service, sharing, views
from app.concepts.access import Need, ViewerDep, get_concept
from app.concepts.models import NAME_MAX_CHARS, SUPERCLASS_MAX_CHARS, TOKEN_MAX_CHARS, Visibility
from app.concepts.schemas import (
    ConceptOut,
    ConceptPage,
    ConceptPatch,
    CreatedOut,
    Resolution,
    ShareOut,
    TokenCheck,
)
from app.concepts.service import ConceptError, Upload
from app.deps import SessionDep, SettingsDep
from app.generations.service import resolve_tokens, resolved
from app.jobs.models import JobKind
from app.jobs.params import FIT_STEPS_MAX, FIT_STEPS_MIN, SEED_MAX, SEED_MIN
from app.jobs.queue import job_ref
from app.readcache import cached_response
from app.security.ratelimit import check_job_quota, count_jobs
from app.uploads.streaming import read_upload, read_upload_files
from app.webhooks.urls import CallbackUrl

router = APIRouter(prefix="/api/concepts", tags=["concepts"])

MASKS_HELP = (
    "Optional subject masks, one per photo, each with its photo's file name (any suffix: "
    "`rex1.png` is the mask of `rex1.jpg`). Greyscale or black-and-white, white where the "
    "subject is (or a cut-out whose transparency is the mask), the photo's size or its shape "
    "(resized to it, bilinear). The fit weights its loss by the mask. Refused with 422: a "
    "count other than the photos', a name no photo has, another shape, all black (415: not an "
    "image we accept)."
)
Page = Annotated[int, Query(ge=1, le=10_000)]
PerPage = Annotated[int, Query(ge=1, le=60)]
Search = Annotated[str, Query(max_length=100)]


def _json(model: BaseModel) -> JSONResponse:
    """What FastAPI would send for `model` as a response_model, as a response to cache."""
    return JSONResponse(model.model_dump(mode="json", by_alias=True))


def _refuse(exc: ConceptError) -> HTTPException:
    return HTTPException(exc.status, exc.message)


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def create_concept(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=NAME_MAX_CHARS)],
    token: Annotated[
        str, Form(max_length=TOKEN_MAX_CHARS, description="Trigger token, e.g. `<rex>`.")
    ],
    superclass: Annotated[
        str, Form(max_length=SUPERCLASS_MAX_CHARS, description="What it is: dog, person, toy…")
    ],
    images: Annotated[list[UploadFile], File(description="3–10 photos of the subject.")],
    steps: Annotated[int | None, Form(ge=FIT_STEPS_MIN, le=FIT_STEPS_MAX)] = None,
    seed: Annotated[int | None, Form(ge=SEED_MIN, le=SEED_MAX)] = None,
    masks: Annotated[list[UploadFile] | None, File(description=MASKS_HELP)] = None,
    callback_url: Annotated[CallbackUrl | None, Form()] = None,
) -> CreatedOut:
    """Upload photos and start teaching the model the subject (a fit job).

    Optional `masks` weight the fit's loss towards the subject: one per photo, each named
    like its photo, white where the subject is (see the field). `callback_url` gets a signed
    webhook when the fit ends."""
    check_job_quota(session, user, JobKind.fit, settings)  # counted once the upload is accepted
    masks = masks or []
    if max(len(images), len(masks)) > rules.MAX_PHOTOS:
        raise HTTPException(422, f"Upload at most {rules.MAX_PHOTOS} photos (and masks).")
    files = [Upload(name, data) for name, data in read_upload_files([*images, *masks], settings)]
    uploads, mask_uploads = files[: len(images)], files[len(images) :]
    try:
        concept, job = service.create_concept(
            session, settings, user, name=name, token=token, superclass=superclass,
            uploads=uploads, masks=mask_uploads, steps=steps, seed=seed,
            callback_url=callback_url,
        )  # fmt: skip
    except ConceptError as exc:
        raise _refuse(exc) from None
    count_jobs(user, JobKind.fit, settings)
    return CreatedOut(id=concept.id, job=job_ref(session, job))


@router.get("")
def my_concepts(
    user: CurrentUser, viewer: ViewerDep, session: SessionDep,
    q: Search = "", page: Page = 1, per_page: PerPage = 12,
) -> ConceptPage:  # fmt: skip
    """Your concepts, newest first; `q` searches name and superclass."""
    return views.list_concepts(session, viewer, mine=True, q=q, page=page, per_page=per_page)


@router.get("/public", response_model=ConceptPage)
async def public_concepts(
    request: Request, viewer: ViewerDep, session: SessionDep,
    q: Search = "", page: Page = 1, per_page: PerPage = 12,
) -> Response:  # fmt: skip
    """Everyone's public concepts, newest first; `q` searches name and superclass."""

    def build() -> Response:
        return _json(views.list_concepts(session, viewer, mine=False, q=q, page=page,
                                         per_page=per_page))  # fmt: skip

    return await cached_response(request, viewer.key, build)


@router.get("/check-token")
def check_token(
    session: SessionDep, token: Annotated[str, Query(max_length=60)] = "",
    name: Annotated[str, Query(max_length=100)] = "",
) -> TokenCheck:  # fmt: skip
    """Is this trigger token well-formed and free? With only `name`, suggests one."""
    return rules.check_token(session, token or rules.suggest_token(name))


@router.get("/free-token")
def free_token(session: SessionDep, token: Annotated[str, Query(max_length=60)]) -> TokenCheck:
    """`token` if free, else the first free `<token-2>`, `<token-3>`… (e.g. to import a
    concept downloaded from this studio back into it)."""
    check = rules.check_token(session, token)
    if not check.valid:
        return check
    return rules.check_token(session, importing.free_token(session, token))


@router.get("/superclasses")
def superclasses(settings: SettingsDep) -> list[str]:
    """Superclass suggestions (only the toy world's nouns when it is the base model)."""
    return basemodel.base_model_facts(settings).superclasses


@router.get("/resolve")
def resolve(
    viewer: ViewerDep, session: SessionDep, prompt: Annotated[str, Query(max_length=500)] = ""
) -> Resolution:
    """Which `<tokens>` in a prompt name concepts you may use, and which are unknown."""
    concepts, unknown = resolve_tokens(session, viewer, prompt)
    return Resolution(recognized=resolved(concepts), unknown=unknown)


@router.post("/import", status_code=status.HTTP_201_CREATED)
def import_concept(
    user: CurrentUser,
    viewer: ViewerDep,
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="A Perfusion concept .safetensors file.")],
    name: Annotated[str | None, Form(max_length=NAME_MAX_CHARS)] = None,
    visibility: Annotated[Visibility, Form()] = Visibility.private,
    token: Annotated[
        str | None,
        Form(max_length=TOKEN_MAX_CHARS, description="Token to use it by (default: the file's)."),
    ] = None,
) -> ConceptOut:
    """Add a concept from a downloaded file (checked against this studio's base model);
    its samples are drawn by a worker, as after a fit."""
    data = read_upload(file, settings.concept_file_max_bytes)
    try:
        concept = importing.import_concept(
            session, settings, user, data, name, visibility, token or None
        )
    except ConceptError as exc:
        raise _refuse(exc) from None
    return views.concept_out(session, viewer, concept)


@router.get("/{concept_id}", response_model=ConceptOut)
async def read_concept(
    request: Request, concept_id: uuid.UUID, viewer: ViewerDep, session: SessionDep
) -> Response:
    """A concept you own, that is public, or whose share link you opened."""
    return await cached_response(
        request,
        viewer.key,
        lambda: _json(views.concept_out(session, viewer, get_concept(session, viewer, concept_id))),
    )


@router.patch("/{concept_id}")
def update_concept(
    concept_id: uuid.UUID, body: ConceptPatch, viewer: ViewerDep, session: SessionDep
) -> ConceptOut:
    """Rename or change visibility (private / unlisted / public). Owner only."""
    concept = get_concept(session, viewer, concept_id, Need.manage)
    service.update_concept(concept, body.name, body.visibility)
    session.flush()
    return views.concept_out(session, viewer, concept)


@router.delete("/{concept_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_concept(concept_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    """Delete the concept with its photos, images and file. Owner only."""
    service.delete_concept(session, get_concept(session, viewer, concept_id, Need.manage))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{concept_id}/file", response_class=Response)
def download_concept(concept_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    """The concept file (.safetensors, ~50 KB) of a ready concept you may view."""
    concept = get_concept(session, viewer, concept_id)
    data = views.concept_file(session, concept)
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "This concept has no file yet.")
    filename = re.sub(r"[^a-z0-9_-]", "", concept.token) or "concept"
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}.safetensors"'},
    )


@router.get("/{concept_id}/photos/{photo_id}", response_class=Response)
def concept_photo(
    concept_id: uuid.UUID, photo_id: uuid.UUID, viewer: ViewerDep, session: SessionDep
) -> Response:
    """A training photo (sanitized PNG). Owner only."""
    concept = get_concept(session, viewer, concept_id, Need.manage)
    data = views.photo_bytes(session, concept, photo_id)
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Photo not found.")
    return Response(
        data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
    )


@router.post("/{concept_id}/fit", status_code=status.HTTP_202_ACCEPTED)
def fit_again(
    concept_id: uuid.UUID,
    user: CurrentUser,
    viewer: ViewerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> CreatedOut:
    """Fit a canceled or failed concept again: same photos, same settings (and the same
    callback URL). Owner only."""
    concept = get_concept(session, viewer, concept_id, Need.manage)
    check_job_quota(session, user, JobKind.fit, settings)
    try:
        job = refit.fit_again(session, concept)
    except ConceptError as exc:
        raise _refuse(exc) from None
    count_jobs(user, JobKind.fit, settings)
    return CreatedOut(id=concept.id, job=job_ref(session, job))


@router.post("/{concept_id}/share")
def share_concept(
    concept_id: uuid.UUID, viewer: ViewerDep, session: SessionDep, settings: SettingsDep
) -> ShareOut:
    """A new unguessable share link (revokes the previous one; private becomes unlisted)."""
    concept = get_concept(session, viewer, concept_id, Need.manage)
    return ShareOut(url=sharing.create_share_link(session, settings, concept))


@router.delete("/{concept_id}/share", status_code=status.HTTP_204_NO_CONTENT)
def revoke_share(concept_id: uuid.UUID, viewer: ViewerDep, session: SessionDep) -> Response:
    """Revoke the share link: whoever opened it loses access (unless the concept is public)."""
    sharing.revoke_share_links(session, get_concept(session, viewer, concept_id, Need.manage))
    return Response(status_code=status.HTTP_204_NO_CONTENT)

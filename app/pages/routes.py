"""Server-rendered pages; their small ES modules in static/js call the JSON API."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from app.auth.deps import OptionalUser
from app.concepts import basemodel, examples, rules, sharing, views
from app.concepts.access import (
    SHARES_COOKIE,
    ViewerDep,
    decode_shares_cookie,
    encode_shares_cookie,
    get_concept,
)
from app.concepts.models import ShareGrant
from app.config import REPO_ROOT
from app.deps import SessionDep, SettingsDep
from app.jobs import params as job_params
from app.pages import concept_facts
from app.readcache import cached_response
from app.static_assets import static_url

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=REPO_ROOT / "templates")
templates.env.globals["wait_text"] = concept_facts.wait_text
templates.env.globals["static"] = static_url


def render(
    request: Request, name: str, user: Any, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"user": user, **context}, status_code=status_code
    )


def not_found_page(request: Request, user: Any, message: str) -> HTMLResponse:
    return render(request, "not_found.html", user, status_code=404, message=message)


def _signin_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)


@router.get("/", response_class=HTMLResponse)
async def browse(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    """My concepts and public concepts as cards, searchable, paginated (cached per viewer
    until the next write, with an ETag)."""

    def build() -> Response:
        mine = (
            views.list_concepts(session, viewer, mine=True, q=q, page=1, per_page=60)
            if viewer.user is not None
            else None
        )
        public = views.list_concepts(session, viewer, mine=False, q=q, page=page, per_page=12)
        pages = max(1, -(-public.total // public.per_page))
        return render(
            request, "browse.html", viewer.user, mine=mine, public=public, q=q, page=page,
            pages=pages,
        )  # fmt: skip

    return await cached_response(request, viewer.key, build)


@router.get("/signin", response_class=HTMLResponse)
def signin(request: Request, user: OptionalUser, next: str = "/") -> HTMLResponse:
    return render(request, "auth.html", user, mode="signin", next=_safe_next(next))


@router.get("/signup", response_class=HTMLResponse)
def signup(request: Request, user: OptionalUser, next: str = "/") -> HTMLResponse:
    return render(request, "auth.html", user, mode="signup", next=_safe_next(next))


def _safe_next(next: str) -> str:
    """Only same-site paths (no `//host` or scheme) may be redirected to after sign-in."""
    return next if next.startswith("/") and not next.startswith("//") else "/"


@router.get("/concepts/new", response_class=HTMLResponse, response_model=None)
def new_concept(
    request: Request, user: OptionalUser, settings: SettingsDep
) -> HTMLResponse | RedirectResponse:
    if user is None:
        return _signin_redirect(request)
    return render(
        request,
        "new_concept.html",
        user,
        superclasses=basemodel.base_model_facts(settings).superclasses,
        default_steps=settings.default_fit_steps,
        toy_world=rules.is_toy_world(settings),
        base=basemodel.base_model_facts(settings),
        sample_sets=examples.sample_sets() if rules.is_toy_world(settings) else (),
        limits={
            "min_photos": rules.MIN_PHOTOS,
            "max_photos": rules.MAX_PHOTOS,
            "max_file_bytes": min(settings.upload_max_file_bytes, rules.MAX_PHOTO_BYTES),
            "max_total_bytes": settings.upload_max_total_bytes,
            "min_side": settings.image_min_side,
            "max_steps": job_params.FIT_STEPS_MAX,
        },
    )


@router.get("/concepts/{concept_id}", response_class=HTMLResponse)
async def concept_page(
    request: Request, concept_id: uuid.UUID, viewer: ViewerDep, session: SessionDep
) -> Response:
    def build() -> Response:
        try:
            concept = get_concept(session, viewer, concept_id)
        except HTTPException:
            return not_found_page(
                request, viewer.user, "This concept does not exist or is not shared."
            )
        out = views.concept_out(session, viewer, concept)
        return render(
            request,
            "concept.html",
            viewer.user,
            concept=out,
            facts=concept_facts.training_facts(out.settings),
            sample_prompt=concept_facts.sample_prompt(session, concept),
            sample_strength=concept_facts.sample_strength(session, concept),
            limits=job_params,
            samples_pending=not out.samples and concept_facts.samples_pending(session, concept),
        )

    return await cached_response(request, viewer.key, build)


@router.get("/s/{secret}", response_class=HTMLResponse, response_model=None)
def open_share_link(
    request: Request, secret: str, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse | RedirectResponse:
    """Opening a share link grants its holder the concept (until the owner revokes it)."""
    link = sharing.find_share_link(session, secret)
    if link is None:
        return not_found_page(request, viewer.user, "This share link was revoked or never existed.")
    if viewer.user is not None:
        held = session.scalar(
            select(ShareGrant.id).where(
                ShareGrant.user_id == viewer.user.id, ShareGrant.share_link_id == link.id
            )
        )
        if held is None:
            session.add(ShareGrant(user_id=viewer.user.id, share_link_id=link.id))
    response = RedirectResponse(f"/concepts/{link.concept_id}", status_code=303)
    links = decode_shares_cookie(request.cookies.get(SHARES_COOKIE))
    if link.id not in links:
        links.append(link.id)
    response.set_cookie(
        SHARES_COOKIE,
        encode_shares_cookie(links),
        max_age=90 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/settings/tokens", response_class=HTMLResponse, response_model=None)
def tokens_page(request: Request, user: OptionalUser) -> HTMLResponse | RedirectResponse:
    if user is None:
        return _signin_redirect(request)
    return render(request, "tokens.html", user)


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return RedirectResponse("/static/img/icon.svg", status_code=308)

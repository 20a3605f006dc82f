"""The tools under a result: Zoom out, pan and Make square (BFL outpainting), and Hi-res (a
re-render at up to 4 MP: BFL has no upscaler).

Each turns a result into a `Draft` that goes the way every request goes (precheck →
prepare → start, bot/generation.py): quotas, banned terms, approvals, studios and the
in-flight cap apply as for Reroll, and the new job's parent is the result. The input is the
result's image as shown in Discord (a job's own output is not kept after delivery). The
canvas arithmetic is bot/tools/canvas.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.community.policy import Requester
from bot.drafts import Draft
from bot.errors import InvalidRequest
from bot.generation import GenerationService
from bot.jobs.models import Job
from bot.references import ReferenceCandidate
from bot.servers.loras import lora_for_remix
from bot.tools.canvas import Move, hires_size, plan_outpaint
from bot.variants import MEGAPIXEL, ReferenceSize, Variant

OUTPAINT_VARIANT = "outpaint"
HIRES_FALLBACK_VARIANT = "pro"  # for a result whose model cannot edit
NO_IMAGE_TEXT = "I can't find this result's image any more, so I can't do that."
HIRES_PROMPT_REMOVED_TEXT = (
    "This image's prompt is no longer kept, so it can't be re-rendered. Use Edit on it instead."
)


@dataclass(frozen=True)
class HiresOffer:
    """What Hi-res would do, shown before anything is sent."""

    variant: Variant
    offered_name: str  # the key to ask for it by
    width: int
    height: int
    estimate: float  # credits

    def text(self) -> str:
        return (
            f"Re-render at {self.width}×{self.height} with {self.variant.label}, about "
            f"{self.estimate:.1f} credits. BFL has no upscaler: Hi-res makes the image again "
            "from this one and its prompt, so small details may change. Nothing is sent or "
            "charged until you confirm."
        )


class ResultTools:
    def __init__(self, generation: GenerationService) -> None:
        self.generation = generation

    def _max_pixels(self, requester: Requester, variant: Variant) -> int:
        """The bot's limit for the variant, within the server's megapixel cap."""
        limit = variant.sizes.max_pixels
        policy = self.generation.policy
        server = policy.server(requester) if policy is not None else None
        if server is not None and server.max_megapixels is not None:
            limit = min(limit, int(server.max_megapixels * MEGAPIXEL))
        return limit

    def _mode(self, requester: Requester) -> str:
        policy = self.generation.policy
        server = policy.server(requester) if policy is not None else None
        return server.outpaint_mode if server is not None else "high"

    def outpaint_draft(
        self, job: Job, requester: Requester, move: Move, image: ReferenceCandidate
    ) -> Draft:
        """Zoom out, pan or Make square on `job`'s result `image`. Raises InvalidRequest
        (no outpainting configured, an image of unknown size, already square)."""
        tool = self.generation.tools.get(OUTPAINT_VARIANT)
        if tool is None:
            raise InvalidRequest("Outpainting isn't available on this bot (it needs BFL).")
        if not image.width or not image.height:
            raise InvalidRequest(NO_IMAGE_TEXT)
        plan = plan_outpaint(image.width, image.height, move, self._max_pixels(requester, tool))
        names = {spec.name for spec in tool.options}
        kept = {k: v for k, v in job.params.options.items() if k in names}
        return Draft(
            # BFL's prompt here is experimental guidance; a removed prompt sends none.
            prompt="" if job.prompt_removed else job.params.prompt,
            variant=OUTPAINT_VARIANT,
            options={
                **kept,
                "reference_offset_x": plan.offset_x,
                "reference_offset_y": plan.offset_y,
                "mode": self._mode(requester),
            },
            width=plan.width,
            height=plan.height,
            references=(image,),
            parent_job_id=job.id,
            needs_edit=True,
            fit_input=(plan.input_width, plan.input_height) if plan.scaled else None,
            use_preferences=False,  # the result's prompt is final (a /prefer suffix included)
        )

    def _hires_variant(self, job: Job) -> Variant:
        """The result's own model when it can edit (and is offered), else pro."""
        generation = self.generation
        own = next((v for v in generation.variants.values() if v.key == job.variant), None)
        if own is not None and own.edit_capable:
            return own
        try:
            return generation.pick_variant(HIRES_FALLBACK_VARIANT, needs_edit=True)
        except InvalidRequest:
            return generation.pick_variant(None, needs_edit=True)

    def hires_draft(
        self,
        job: Job,
        image: ReferenceCandidate,
        *,
        variant: str,
        width: int,
        height: int,
    ) -> Draft:
        """The re-render: `job`'s prompt, its options the model understands, the result as
        the reference, at `width`×`height`. Raises InvalidRequest once the prompt is gone."""
        if job.prompt_removed:
            raise InvalidRequest(HIRES_PROMPT_REMOVED_TEXT)
        chosen = self.generation.pick_variant(variant, needs_edit=True)
        names = {spec.name for spec in chosen.options}
        return Draft(
            prompt=job.params.prompt,
            variant=variant,
            options={k: v for k, v in job.params.options.items() if k in names},
            width=width,
            height=height,
            references=(image,),
            parent_job_id=job.id,
            needs_edit=True,
            lora=lora_for_remix(job.params.lora, chosen),  # kept where the model takes it
            use_preferences=False,  # the result's prompt is final (a /prefer suffix included)
        )

    def hires_offer(self, job: Job, requester: Requester, image: ReferenceCandidate) -> HiresOffer:
        """What Hi-res would make of `job`'s result `image` here, and what it costs (the
        variant's estimate, every server rule applied). Raises InvalidRequest."""
        if not image.width or not image.height:
            raise InvalidRequest(NO_IMAGE_TEXT)
        variant = self._hires_variant(job)
        limit = self._max_pixels(requester, variant)
        width, height = hires_size(image.width, image.height, variant.sizes, limit)
        name = self.generation.offered_name(variant)
        draft = self.hires_draft(job, image, variant=name, width=width, height=height)
        variant, params = self.generation.validate(draft, requester)
        estimate = variant.estimate_cost(params, [ReferenceSize(image.width, image.height)])
        return HiresOffer(variant, name, width, height, estimate)

"""Sans-I/O turn-taking: 16 kHz audio and transcripts in, turn events and transcription work out.

The unit segments the microphone stream into user turns (the VAD), asks for the transcriptions a
turn needs (partials while the user speaks, a speculative pass at each pause, the final pass) and
decides where a turn ends. It never awaits or runs a model: the session feeds it audio and the
results of the work it asked for, and acts on what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from voice.asr.base import Hints
from voice.asr.hallucination import normalise
from voice.asr.stable_prefix import StablePrefix
from voice.audio import ASR_RATE
from voice.text import is_backchannel, reads_as_finished
from voice.vad import SileroModel, VadConfig, VadSegmenter, VoiceStarted, VoiceStopped

IDLE_KEEP_MS = 2000  # audio kept before a speech start, for the prefix padding
TAIL_MS = 120  # audio after the last voiced frame given to the transcription of a turn
PARTIAL_EVERY_MS = 500  # new speech between two partial passes
PARTIAL_MIN_PROBABILITY = 0.8  # a partial pass starts only on a frame Silero is sure is speech
SPECULATE_AFTER_MS = 64  # silence after which the turn is transcribed speculatively (2 VAD frames)
# After the first silent frame that pass is asked for already, to be run only if the models are idle:
# a pause between words also gives one silent frame, and a pass for it is wasted work.
EARLY_SPECULATE_AFTER_MS = 32
EVALUATE_EVERY_MS = 250
"""How often the speech so far is handed out while the user speaks (`SpeechSoFar`): each time the
native model encodes its last few seconds and evaluates the new positions."""
EVALUATE_MAX_S = 30  # speech handed out while the user speaks, at most (the encoder's window)
# Speech over the assistant opens a turn (and sends speech_started, so that clients lower or stop the
# voice) after this much voiced audio instead of the VAD's min_speech_ms: it only interrupts once confirmed.
BARGE_IN_MIN_SPEECH_MS = 96
CHECK_EVERY_MS = 300  # speech over the assistant is transcribed this often until it reads as an interruption
CONFIRM_SPEECH_MS = 2000  # speech over the assistant this long interrupts it, whatever its words
# Words heard over the assistant count only when Whisper is this sure of them: a non-lexical backchannel
# ("mm-hmm") is heard as guessed words ("in a month") below it (mean token log-probability).
MIN_WORDS_CONFIDENCE = -0.65


class Phase(Enum):
    """Where the user is: no turn open, speaking, or silent inside an open turn (the silence window
    runs); `MANUAL` without turn detection: audio is buffered until the client commits it."""

    IDLE = "idle"
    SPEAKING = "speaking"
    PAUSED = "paused"
    MANUAL = "manual"


@dataclass(frozen=True)
class EndPolicy:
    """How long a pause must last to end the turn, by what the words and the voice say there
    (`voice/end_of_turn.py`). Until they have said it, the pause must last `hold_ms`."""

    finished_ms: int
    """The words say the user has finished (P >= `finished_at`) and the voice does not say otherwise."""
    unsure_ms: int
    """The words may have finished (P >= `unsure_at`) and the voice does not say otherwise."""
    hold_ms: int
    """Otherwise: the user will likely go on."""
    finished_at: float
    unsure_at: float
    voice_goes_on_below: float
    """Smart Turn's P(finished) under which the voice says the user goes on (only holds the turn)."""
    recheck_ms: int | None = None
    """Ask the voice again this far into a pause that the window has not ended yet (None: never), when
    the words said at least `recheck_at`: the pause ends there if the voice then says `voice_finished_at`."""
    recheck_at: float = 1.0
    voice_finished_at: float = 1.0

    def rechecks(self, finished: float, voice: float | None) -> bool:
        """Whether a pause with this score is asked about again at `recheck_ms`."""
        return self.recheck_ms is not None and finished >= self.recheck_at \
            and self.window_ms(finished, voice) > self.recheck_ms

    def window_ms(self, finished: float, voice: float | None) -> int:
        going_on = voice is not None and voice < self.voice_goes_on_below
        if finished >= self.finished_at and not going_on:
            return self.finished_ms
        if finished >= self.unsure_at and not going_on:
            return self.unsure_ms
        return self.hold_ms


# semantic_vad's eagerness (`python -m benchmarks.turn_fit` fits them on the turn-taking data): `high`
# ends finished questions and commands within 600 ms at the cost of cutting into more pauses; `auto`
# and `low` hold a turn open while its words or its voice say it may go on; `auto` asks the voice again
# 600 ms into a pause the words left unsure, and ends it there if the voice is sure it has finished.
END_POLICIES = {
    "high": EndPolicy(finished_ms=300, unsure_ms=600, hold_ms=1600, finished_at=0.7, unsure_at=0.3,
                      voice_goes_on_below=0.02),
    "auto": EndPolicy(finished_ms=300, unsure_ms=1000, hold_ms=2000, finished_at=0.7, unsure_at=0.7,
                      voice_goes_on_below=0.1, recheck_ms=600, recheck_at=0.6, voice_finished_at=0.98),
    "low": EndPolicy(finished_ms=500, unsure_ms=1200, hold_ms=3000, finished_at=0.7, unsure_at=0.7,
                     voice_goes_on_below=0.1),
}
END_POLICIES["medium"] = END_POLICIES["auto"]


@dataclass(frozen=True)
class TurnSettings:
    """How turns are found: the VAD (its silence window ends a turn), and for `semantic_vad` the
    policy that ends it sooner where the words and the voice say the user has finished."""

    vad: VadConfig = field(default_factory=VadConfig)
    end_policy: EndPolicy | None = None


@dataclass(frozen=True)
class TurnOptions:
    """What the unit does besides finding turns (None `settings`: no turn detection)."""

    settings: TurnSettings | None
    early_asr: bool = True
    """Transcribe while the user speaks: partials and a speculative pass at each pause."""
    partials: bool = True
    """Partial transcripts (they feed the user's live transcript)."""
    speech_events: bool = False
    """Hand out the speech itself as it comes (`SpeechSoFar`, `Paused`), for a pipeline that answers
    the speech rather than its transcript."""


@dataclass
class TurnClock:
    """Monotonic times of one user turn's stages, for the reply's timing metadata."""

    speech_end: float | None = None  # when the last voiced audio arrived
    speech_end_audio_ms: int | None = None
    end_of_turn: float | None = None  # when the turn was closed (by the VAD, or by a commit)
    transcript: float | None = None


@dataclass
class Speculation:
    """A speculative pass: the turn transcribed as if it ended at `voiced_end_ms`."""

    voiced_end_ms: int
    result: TranscriptReady | None = None  # once the pass is back

    @property
    def text(self) -> str | None:
        return None if self.result is None else self.result.text


@dataclass
class Turn:
    """One user turn, from its speech start until its final transcript."""

    item_id: str
    start: int  # stream sample of its first audio
    onset_ms: int = 0  # stream position where its speech began (its first audio is the prefix padding before)
    over_reply: bool = False
    """Opened while the assistant was speaking: an interruption only once its words or its length say so."""
    interrupting: bool = False  # confirmed as an interruption
    checked_ms: int = 0  # speech the last interruption check covered
    heard_over: list[str] | None = None  # the words the last pass over its speech heard (while it is over a reply)
    clock: TurnClock = field(default_factory=TurnClock)
    partial: StablePrefix = field(default_factory=StablePrefix)
    partial_samples: int = 0  # speech the last partial pass covered
    evaluated_samples: int = 0  # speech handed out with SpeechSoFar
    speculation: Speculation | None = None
    declined_early_at: int | None = None  # voiced end whose early speculative pass was declined
    paused_at: int | None = None  # voiced end of the last Paused event
    end_score: EndScored | None = None  # the score of the pause under way, once it is in
    rechecked_at: int | None = None  # voiced end of the pause last asked about again
    audio: np.ndarray | None = None  # once ended
    awaits_speculation: bool = False  # ended where the speculation under way heard it


# Work: the transcriptions the unit asks for.
@dataclass(frozen=True)
class Transcribe:
    """Transcribe a turn: a partial (while speaking), speculative (at a pause, in case the turn
    ends there) or final pass."""

    item_id: str
    audio: np.ndarray = field(repr=False)
    final: bool
    speculative: bool = False
    voiced_end_ms: int | None = None
    early: bool = False
    """A speculative pass asked for after one silent frame: run it only if no other model work is
    under way, else decline it (an error result); the unit then asks again after two."""
    defer_ms: int | None = None
    """Wait this long before running it (the session's choice: see `DeferTranscription`)."""
    check: bool = False
    """A pass over speech heard while the assistant speaks, to tell an interruption from a
    backchannel or a noise: it runs even while other model work is under way."""
    hints: Hints | None = None
    """The session's language and prompt for the recogniser (set by the session, not the turn-taker)."""


@dataclass(frozen=True)
class ScoreEnd:
    """Score the turn's end at this pause: its transcript so far and its audio (`voice/end_of_turn.py`)."""

    item_id: str
    voiced_end_ms: int
    transcript: str
    audio: np.ndarray = field(repr=False)
    recheck: bool = False
    """Asked again later in the pause (`EndPolicy.recheck_ms`): `audio` runs up to now, silence included."""


@dataclass(frozen=True)
class EndScored:
    """The result of a `ScoreEnd`: `finished` and `voice` as `EndScore` has them, or an error."""

    item_id: str
    voiced_end_ms: int
    finished: float = 0.0
    voice: float | None = None
    error: str | None = None
    recheck: bool = False


@dataclass(frozen=True)
class TranscriptReady:
    """The result of a `Transcribe`, fed back with the same identifying fields."""

    item_id: str
    text: str
    final: bool
    error: str | None = None
    speculative: bool = False
    voiced_end_ms: int | None = None
    early: bool = False
    check: bool = False
    confidence: float | None = None
    """How sure the recogniser was (`voice.asr.base.Heard`); None: not known."""

    @property
    def says_words(self) -> bool:
        """Whether it heard words other than a backchannel's, and surely enough to act on them."""
        sure = self.confidence is None or self.confidence >= MIN_WORDS_CONFIDENCE
        return not self.error and sure and not is_backchannel(self.text)


# Turn events.
@dataclass(frozen=True)
class TurnStarted:
    """The user started speaking: a turn opened."""

    item_id: str
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechResumed:
    """The user spoke again after a pause inside the turn: what was started on the pause is stale."""

    item_id: str


@dataclass(frozen=True)
class Paused:
    """The first silent frame after speech: the turn as it stands (with `speech_events`)."""

    item_id: str
    voiced_end_ms: int
    audio: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class SpeechSoFar:
    """The turn's speech so far, every EVALUATE_EVERY_MS while the user speaks (with `speech_events`)."""

    audio: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class AudioBegan:
    """Without turn detection: the first audio since the last commit or clear arrived."""


@dataclass(frozen=True)
class PartialTranscript:
    item_id: str
    delta: str  # newly committed words, with their leading space
    words: str  # every committed word so far
    first: bool  # the turn's first committed words


@dataclass(frozen=True)
class SpeculativeTranscript:
    """The turn transcribed as if it ended at this pause, while the user is still silent."""

    item_id: str
    voiced_end_ms: int
    text: str


@dataclass(frozen=True)
class Interruption:
    """Speech over the assistant is a real interruption (words that are not a backchannel, or
    speech that goes on): the reply should stop."""

    item_id: str


@dataclass(frozen=True)
class TurnEnded:
    item_id: str
    audio: np.ndarray = field(repr=False)
    clock: TurnClock
    transcribed: bool
    """The speculative pass heard exactly this turn: no final pass is asked for."""


@dataclass(frozen=True)
class TurnTranscribed:
    item_id: str
    text: str
    rest: str  # the part of `text` the partial transcripts did not give
    clock: TurnClock | None
    error: str | None = None
    backchannel: bool = False
    """Heard while the assistant spoke, and only a backchannel or a noise: not a turn to answer."""


TurnEvent = (Transcribe | ScoreEnd | TurnStarted | SpeechResumed | Paused | SpeechSoFar | AudioBegan | PartialTranscript
             | SpeculativeTranscript | Interruption | TurnEnded | TurnTranscribed)


class AudioWindow:
    """The 16 kHz stream's recent samples, addressed by stream position."""

    def __init__(self) -> None:
        self.samples = np.zeros(0, dtype=np.float32)
        self.start = 0  # stream position of samples[0]

    @property
    def end(self) -> int:
        """The stream position after the last sample."""
        return self.start + self.samples.size

    def append(self, samples: np.ndarray) -> None:
        self.samples = np.concatenate([self.samples, samples])

    def drop_before(self, position: int) -> None:
        cut = min(position, self.end) - self.start
        if cut > 0:
            self.samples = self.samples[cut:]
            self.start += cut

    def between(self, start: int, end: int) -> np.ndarray:
        lo = max(0, start - self.start)
        hi = max(lo, min(self.samples.size, end - self.start))
        return self.samples[lo:hi].copy()


class TurnTaker:
    """One session's turn-taking. `new_item_id` names each turn (the conversation item it becomes)."""

    def __init__(self, options: TurnOptions, vad_model: SileroModel, new_item_id: Callable[[], str], *,
                 max_turn_s: float = 60.0) -> None:
        self.options = options
        self.max_turn_samples = int(max_turn_s * ASR_RATE)
        self.window = AudioWindow()
        self.turn: Turn | None = None  # the open turn
        self.ended: dict[str, Turn] = {}  # ended turns waiting for their final transcript
        self._vad_model = vad_model
        self._new_item_id = new_item_id
        self._vad: VadSegmenter | None = None
        self._partial_in_flight = False
        self._check_in_flight = False
        self._last_voiced_ms: int | None = None
        self._last_voiced_at: float | None = None  # when the audio of the last voiced frame arrived
        self._manual_evaluated = 0  # without turn detection: speech handed out since the audio began
        self._reset_vad()

    @property
    def phase(self) -> Phase:
        if self._vad is None:
            return Phase.MANUAL
        if self.turn is None:
            return Phase.IDLE
        voiced_end = self._vad.last_voiced_end_ms
        return Phase.PAUSED if voiced_end is not None and self._vad.position_ms > voiced_end else Phase.SPEAKING

    @property
    def position_ms(self) -> int:
        """Stream time of the audio the VAD has judged (whole frames)."""
        return self._vad.position_ms if self._vad is not None else self.window.end * 1000 // ASR_RATE

    @property
    def transcribing(self) -> bool:
        """Whether an ended turn still waits for its final transcript."""
        return bool(self.ended)

    def configure(self, options: TurnOptions) -> None:
        """New options (`session.update`); new turn settings drop the open turn without ending it."""
        old, self.options = self.options, options
        if options.settings != old.settings:
            self.turn = None
            self._reset_vad()

    def forget(self, item_id: str) -> None:
        """The item was deleted: its transcript is no longer awaited."""
        self.ended.pop(item_id, None)

    def _reset_vad(self) -> None:
        settings = self.options.settings
        self._vad = VadSegmenter(settings.vad, self._vad_model) if settings else None

    # ------------------------------------------------------------------ audio in
    def feed(self, samples: np.ndarray, now: float, assistant_speaking: bool = False) -> list[TurnEvent]:
        """Take the next 16 kHz samples of the stream; `assistant_speaking`: the client is playing a
        reply now (speech that starts then is an interruption only once confirmed)."""
        out: list[TurnEvent] = []
        began = self.window.samples.size == 0 and samples.size > 0
        self.window.append(samples)
        if self._vad is None:
            if began:
                self._manual_evaluated = 0
                out.append(AudioBegan())
            self._hand_out_speech(self.window.start, out)
            return out
        resumable = self.phase is Phase.PAUSED
        for event in self._vad.process(samples, BARGE_IN_MIN_SPEECH_MS if assistant_speaking else None):
            if isinstance(event, VoiceStarted):
                self._open(event, assistant_speaking, out)
            else:
                self._close(event, now, out)
        voiced_ms = self._vad.last_voiced_end_ms
        if voiced_ms != self._last_voiced_ms:
            self._last_voiced_ms = voiced_ms
            self._last_voiced_at = now
            if resumable and self.turn is not None:
                out.append(SpeechResumed(self.turn.item_id))
        turn = self.turn
        if turn is None:
            self.window.drop_before(self.window.end - IDLE_KEEP_MS * ASR_RATE // 1000)
        elif self.window.end - turn.start >= self.max_turn_samples:
            # Endless "speech" (music, a stuck microphone): close the turn rather than buffer forever.
            stopped = self._vad.end_turn()
            if stopped is not None:
                self._close(stopped, now, out)
        else:
            self._maybe_speculate(turn, out)
            self._maybe_recheck(turn, out)
            self._maybe_partial(turn, out)
            self._maybe_check_interruption(turn, out)
            if self._surely_speaking():
                self._hand_out_speech(turn.start, out)
        return out

    def commit(self, now: float) -> list[TurnEvent]:
        """The client committed the buffered audio as a turn (push-to-talk, or a manual commit)."""
        turn = self.turn or Turn(self._new_item_id(), self.window.start)
        self.turn = None
        turn.clock = TurnClock(speech_end=now, end_of_turn=now)
        turn.audio = self.window.samples
        turn.speculation = None
        self.window.drop_before(self.window.end)
        self._reset_vad()
        self.ended[turn.item_id] = turn
        return [Transcribe(turn.item_id, turn.audio, final=True),
                TurnEnded(turn.item_id, turn.audio, turn.clock, transcribed=False)]

    def clear(self) -> None:
        """The client cleared the buffered audio: the open turn is dropped."""
        self.window.drop_before(self.window.end)
        self.turn = None
        self._reset_vad()

    @property
    def buffered_samples(self) -> int:
        return self.window.samples.size

    def _open(self, event: VoiceStarted, assistant_speaking: bool, out: list[TurnEvent]) -> None:
        start = max(self.window.start, event.audio_start_ms * ASR_RATE // 1000)
        self.turn = Turn(self._new_item_id(), start, onset_ms=event.speech_start_ms, over_reply=assistant_speaking)
        out.append(TurnStarted(self.turn.item_id, event.audio_start_ms))

    def _close(self, event: VoiceStopped, now: float, out: list[TurnEvent]) -> None:
        turn = self.turn
        if turn is None:
            return
        self.turn = None
        turn.clock.speech_end = self._last_voiced_at
        turn.clock.end_of_turn = now
        turn.clock.speech_end_audio_ms = event.audio_end_ms
        turn.audio = self._turn_audio(turn, event.audio_end_ms)
        self.window.drop_before((event.audio_end_ms + TAIL_MS) * ASR_RATE // 1000)
        speculation, turn.speculation = turn.speculation, None
        heard = speculation is not None and speculation.voiced_end_ms == event.audio_end_ms
        self.ended[turn.item_id] = turn
        if not heard:
            out.append(Transcribe(turn.item_id, turn.audio, final=True))
        out.append(TurnEnded(turn.item_id, turn.audio, turn.clock, transcribed=heard))
        if heard and speculation.result is not None:  # the speculative transcript is the final one
            self._transcribed(replace(speculation.result, final=True, speculative=False), now, out)
        elif heard:
            turn.speculation = speculation
            turn.awaits_speculation = True

    def _turn_audio(self, turn: Turn, voiced_end_ms: int) -> np.ndarray:
        return self.window.between(turn.start, (voiced_end_ms + TAIL_MS) * ASR_RATE // 1000)

    def _surely_speaking(self) -> bool:
        """Whether the user is surely still speaking: not paused, on a frame Silero is sure of (a
        pause, or speech that may be ending, leaves the models to the turn's speculative work)."""
        assert self._vad is not None
        return self.phase is Phase.SPEAKING and self._vad.last_probability >= PARTIAL_MIN_PROBABILITY

    def _maybe_partial(self, turn: Turn, out: list[TurnEvent]) -> None:
        """Ask for a partial transcript every PARTIAL_EVERY_MS of new speech, one at a time."""
        if not (self.options.early_asr and self.options.partials) or self._partial_in_flight:
            return
        speech = self.window.end - turn.start
        if speech - turn.partial_samples < PARTIAL_EVERY_MS * ASR_RATE // 1000 or not self._surely_speaking():
            return  # (a pause keeps the ASR free for the speculative pass that may be coming)
        self._partial_in_flight = True
        turn.partial_samples = speech
        out.append(Transcribe(turn.item_id, self.window.between(turn.start, self.window.end), final=False))

    def _maybe_check_interruption(self, turn: Turn, out: list[TurnEvent]) -> None:
        """Speech over the assistant: transcribed every CHECK_EVERY_MS of it (one pass at a time)
        until its words say it interrupts, or it goes on for CONFIRM_SPEECH_MS."""
        if not turn.over_reply or turn.interrupting:
            return
        assert self._vad is not None
        speech_ms = (self._vad.last_voiced_end_ms or turn.onset_ms) - turn.onset_ms
        if speech_ms >= CONFIRM_SPEECH_MS:
            self._interrupt(turn, out)
        elif not self._check_in_flight and speech_ms - turn.checked_ms >= CHECK_EVERY_MS:
            self._check_in_flight = True
            turn.checked_ms = speech_ms
            out.append(Transcribe(turn.item_id, self.window.between(turn.start, self.window.end), final=False,
                                  check=True))

    def _interrupt(self, turn: Turn, out: list[TurnEvent]) -> None:
        turn.interrupting = True
        out.append(Interruption(turn.item_id))

    def _hand_out_speech(self, turn_start: int, out: list[TurnEvent]) -> None:
        """With `speech_events`: the speech so far, every EVALUATE_EVERY_MS of it."""
        options = self.options
        if not (options.speech_events and options.early_asr):
            return
        turn = self.turn
        evaluated = turn.evaluated_samples if turn is not None else self._manual_evaluated
        speech = self.window.end - turn_start
        if speech - evaluated < EVALUATE_EVERY_MS * ASR_RATE // 1000 or speech > EVALUATE_MAX_S * ASR_RATE:
            return  # (a longer turn, or an open microphone never committed: the reply encodes it)
        if turn is not None:
            turn.evaluated_samples = speech
        else:
            self._manual_evaluated = speech
        out.append(SpeechSoFar(self.window.between(turn_start, self.window.end)))

    def _maybe_speculate(self, turn: Turn, out: list[TurnEvent]) -> None:
        """Once the user has been silent briefly, transcribe the turn as if it had ended, so that
        the transcript is ready (or nearly) when the silence window does close the turn."""
        assert self._vad is not None
        voiced_end = self._vad.last_voiced_end_ms
        if not self.options.early_asr or voiced_end is None:
            return
        silence = self._vad.position_ms - voiced_end
        if silence < EARLY_SPECULATE_AFTER_MS:
            return
        early = silence < SPECULATE_AFTER_MS
        current = turn.speculation
        transcribe = (current is None or current.voiced_end_ms != voiced_end) \
            and not (early and turn.declined_early_at == voiced_end)
        pause = self.options.speech_events and turn.paused_at != voiced_end
        if not (transcribe or pause):
            return
        audio = self._turn_audio(turn, voiced_end)
        if transcribe:
            turn.speculation = Speculation(voiced_end)
            out.append(Transcribe(turn.item_id, audio, final=False, speculative=True, voiced_end_ms=voiced_end,
                                  early=early))
        if pause:  # after the pass above, so that the runtime does not decline it for work this starts
            turn.paused_at = voiced_end
            out.append(Paused(turn.item_id, voiced_end, audio))

    def _maybe_recheck(self, turn: Turn, out: list[TurnEvent]) -> None:
        """Ask the voice again once a pause that the words left open has lasted `recheck_ms`: Smart
        Turn hears a finished voice better as the silence grows."""
        assert self._vad is not None
        policy = self.options.settings.end_policy if self.options.settings else None
        voiced_end, score = self._vad.last_voiced_end_ms, turn.end_score
        if policy is None or policy.recheck_ms is None or score is None or voiced_end is None \
                or score.voiced_end_ms != voiced_end or turn.rechecked_at == voiced_end \
                or self._vad.position_ms - voiced_end < policy.recheck_ms \
                or not policy.rechecks(score.finished, score.voice):
            return
        turn.rechecked_at = voiced_end
        transcript = turn.speculation.text if turn.speculation is not None else None
        if transcript:
            audio = self.window.between(turn.start, self.window.end)
            out.append(ScoreEnd(turn.item_id, voiced_end, transcript, audio, recheck=True))

    # ------------------------------------------------------------------ transcripts in
    def transcribed(self, result: TranscriptReady, now: float) -> list[TurnEvent]:
        """Take the result of a `Transcribe` this unit asked for."""
        out: list[TurnEvent] = []
        if result.check:
            self._check_result(result, out)
        elif result.speculative:
            self._speculative_result(result, now, out)
        elif result.final:
            self._transcribed(result, now, out)
        else:
            self._partial_result(result, out)
        return out

    def _transcribed(self, result: TranscriptReady, now: float, out: list[TurnEvent]) -> None:
        item_id, text, error = result.item_id, result.text, result.error
        turn = self.ended.pop(item_id, None)
        if turn is None:
            out.append(TurnTranscribed(item_id, text, text, None, error))
            return
        turn.clock.transcript = now
        rest = turn.partial.remainder(text) if turn.partial.committed else text
        if turn.over_reply and not turn.interrupting and result.says_words and turn.heard_over is not None \
                and normalise(text).split()[:len(turn.heard_over)] == turn.heard_over:
            self._interrupt(turn, out)  # its words say so, now that it is over
        backchannel = turn.over_reply and not turn.interrupting
        out.append(TurnTranscribed(item_id, text, rest, turn.clock, error, backchannel))

    def scored(self, result: EndScored) -> None:
        """Take the result of a `ScoreEnd`: the pause ends the turn after the window its score gives."""
        turn, vad = self.turn, self._vad
        policy = self.options.settings.end_policy if self.options.settings else None
        if turn is None or vad is None or policy is None or turn.item_id != result.item_id \
                or vad.last_voiced_end_ms != result.voiced_end_ms:
            return  # the turn ended, or the user went on
        speculation = turn.speculation
        if result.recheck:
            if not result.error and result.voice is not None and result.voice >= policy.voice_finished_at:
                vad.end_after_silence(policy.recheck_ms or 0)  # the pause is already that long: it ends now
            return
        if result.error:  # what the words alone say, then
            finished = speculation is not None and reads_as_finished(speculation.text or "")
            vad.end_after_silence(policy.finished_ms if finished else policy.unsure_ms)
            return
        turn.end_score = result
        vad.end_after_silence(policy.window_ms(result.finished, result.voice))

    def _check_result(self, result: TranscriptReady, out: list[TurnEvent]) -> None:
        self._check_in_flight = False
        turn = self.turn
        if turn is not None and turn.item_id == result.item_id:
            self._hear_over_reply(turn, result, out)

    def _hear_over_reply(self, turn: Turn, result: TranscriptReady, out: list[TurnEvent]) -> None:
        """A pass over speech heard while the assistant spoke (a check, or a speculative pass at a
        pause): it interrupts once two passes in a row hear the same words, and they are not a
        backchannel's (one pass over the start of a "mm-hmm" can hear confident nonsense)."""
        if not turn.over_reply or turn.interrupting or result.error:
            return
        words = normalise(result.text).split()
        before, turn.heard_over = turn.heard_over, words
        if result.says_words and before is not None and before and words[:len(before)] == before:
            self._interrupt(turn, out)

    def _speculative_result(self, result: TranscriptReady, now: float, out: list[TurnEvent]) -> None:
        ended = self.ended.get(result.item_id)
        if ended is not None and ended.awaits_speculation and ended.speculation is not None \
                and ended.speculation.voiced_end_ms == result.voiced_end_ms:
            ended.awaits_speculation = False
            if result.error:  # fall back to a regular final pass
                assert ended.audio is not None
                out.append(Transcribe(result.item_id, ended.audio, final=True))
            else:
                self._transcribed(replace(result, final=True, speculative=False), now, out)
            return
        turn = self.turn
        if turn is None or turn.item_id != result.item_id:
            return
        if result.early and result.error:  # declined: asked again once the silence is two frames long
            turn.declined_early_at = result.voiced_end_ms
        speculation = turn.speculation
        if speculation is None or speculation.voiced_end_ms != result.voiced_end_ms:
            return
        if result.error:
            turn.speculation = None
            return
        speculation.result = result
        self._hear_over_reply(turn, result, out)
        assert self._vad is not None
        if self._vad.last_voiced_end_ms != result.voiced_end_ms:
            return  # the user went on meanwhile
        policy = self.options.settings.end_policy if self.options.settings else None
        if policy is not None and result.text:
            audio = self._turn_audio(turn, result.voiced_end_ms)
            out.append(ScoreEnd(turn.item_id, result.voiced_end_ms, result.text, audio))
        elif policy is not None:  # no words: nothing says it is over, but nothing says it goes on
            self._vad.end_after_silence(policy.unsure_ms)
        if result.text:
            out.append(SpeculativeTranscript(result.item_id, result.voiced_end_ms, result.text))

    def _partial_result(self, result: TranscriptReady, out: list[TurnEvent]) -> None:
        self._partial_in_flight = False
        turn = self.turn
        if turn is None or result.item_id != turn.item_id or result.error or not self.options.partials:
            return
        first = not turn.partial.committed
        delta = turn.partial.update(result.text)
        if delta:
            out.append(PartialTranscript(turn.item_id, delta, turn.partial.text, first))

"""The source's sound in the stylized video: its packets copied as they are when the output container takes that
codec, otherwise decoded and re-encoded (AAC for MP4/MOV, Opus for WebM).

The track is fed as the video advances (``advance``: the sound up to where the video written so far ends), so
audio and video packets interleave in the file (a player streaming it needs both near each other), and it ends
where the video ends: a cancelled run keeps only the sound of the frames it made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av

OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


class AudioTrack:
    """The first audio stream of ``source``, added to ``output`` (before its first packet is written)."""

    def __init__(
        self, source: Path, output: av.container.OutputContainer, transcode_to: str, copyable: frozenset[str]
    ) -> None:
        self._input = av.open(str(source), metadata_errors="replace")
        self._source = self._input.streams.audio[0]
        self.copied = self._source.codec_context.name in copyable
        try:
            self.stream = self._add_stream(output, transcode_to)
        except BaseException:
            self._input.close()
            raise
        self.codec = self.stream.codec_context.name
        self._output = output
        self._packets = self._input.demux(self._source)
        self._pending: av.Packet | None = None
        self._done = False

    def _add_stream(self, output: av.container.OutputContainer, transcode_to: str) -> av.AudioStream:
        if self.copied:
            return output.add_stream_from_template(self._source)
        stream = output.add_stream(transcode_to, rate=self._output_rate(transcode_to))
        layout = self._source.codec_context.layout
        stream.layout = layout if layout.nb_channels <= 2 else "stereo"  # 5.1 → stereo: what every player takes
        return stream

    def _output_rate(self, codec: str) -> int:
        rate = self._source.codec_context.sample_rate or 48000
        if codec == "libopus" and rate not in OPUS_RATES:
            return 48000
        return rate

    def advance(self, video_seconds: float) -> None:
        """Write the sound that starts before ``video_seconds`` (where the video written so far ends)."""
        self._write_until(video_seconds)

    def finish(self, end_seconds: float) -> None:
        """Write the sound that starts before ``end_seconds`` (the video's end), flush the encoder, and close."""
        self._write_until(end_seconds)
        if not self.copied:
            for packet in self.stream.encode(None):
                self._output.mux(packet)
        self.close()

    def close(self) -> None:
        """Close the source (again is fine)."""
        self._input.close()

    def _write_until(self, seconds: float) -> None:
        for packet in self._source_packets(seconds):
            if self.copied:
                packet.stream = self.stream
                self._output.mux(packet)
                continue
            for frame in packet.decode():
                for encoded in self.stream.encode(frame):
                    self._output.mux(encoded)

    def _source_packets(self, seconds: float) -> Iterator[av.Packet]:
        """The source's packets that start before ``seconds``, in order (a packet past it waits for next time)."""
        while not self._done:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                self._done = True
                return
            if packet.pts is None or packet.size == 0:
                continue  # the demuxer's final empty packet, or one that cannot be placed in time
            if packet.pts * packet.time_base >= seconds:
                self._pending = packet
                return
            yield packet

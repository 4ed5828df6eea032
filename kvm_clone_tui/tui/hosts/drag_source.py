"""Dragging items out of a widget with the mouse: press, move a few cells, release elsewhere.

The widget captures the mouse on a press, so it hears every move and the release wherever the
pointer goes; it reports :class:`DragSource.Dragging` while the pointer moves and
:class:`DragSource.Dropped` on release, with screen coordinates. Whoever handles them (the app)
decides what lies under the pointer. A click that ends a drag is swallowed.
"""

from __future__ import annotations

from textual import events
from textual.geometry import Offset
from textual.message import Message
from textual.widget import Widget

DRAG_THRESHOLD = 2  # cells the pointer travels before a press becomes a drag


class DragSource(Widget):
    """Mixin for a widget whose items can be dragged (override :meth:`drag_items`)."""

    class Dragging(Message):
        """Items are being dragged; the pointer is at ``offset`` (screen coordinates)."""

        def __init__(self, source: DragSource, items: tuple[str, ...], offset: Offset) -> None:
            super().__init__()
            self.source = source
            self.items = items
            self.offset = offset

    class Dropped(Message):
        """The items were released at ``offset`` (screen coordinates)."""

        def __init__(self, source: DragSource, items: tuple[str, ...], offset: Offset) -> None:
            super().__init__()
            self.source = source
            self.items = items
            self.offset = offset

    _drag_start: Offset | None = None
    _drag_items: tuple[str, ...] = ()
    _dragging = False
    _swallow_click = False

    def drag_items(self, event: events.MouseDown) -> tuple[str, ...]:
        """What a press at ``event`` would drag (nothing: no drag)."""
        return ()

    @property
    def dragging(self) -> bool:
        """True between the first move past the threshold and the release."""
        return self._dragging

    def on_mouse_down(self, event: events.MouseDown) -> None:
        self._swallow_click = False
        if event.button != 1:
            return
        items = self.drag_items(event)
        if items:
            self._drag_start, self._drag_items = event.screen_offset, items
            self.capture_mouse()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._drag_start is None:
            return
        offset = event.screen_offset
        if not self._dragging:
            moved = offset - self._drag_start
            if max(abs(moved.x), abs(moved.y)) < DRAG_THRESHOLD:
                return
            self._dragging = True
        event.prevent_default()  # no hover cursor chasing the pointer over other widgets
        self.post_message(self.Dragging(self, self._drag_items, offset))

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._drag_start is None:
            return
        dragged, items = self._dragging, self._drag_items
        self._drag_start, self._drag_items, self._dragging = None, (), False
        self.release_mouse()
        if dragged:
            self._swallow_click = True  # the release is no click on a row
            self.post_message(self.Dropped(self, items, event.screen_offset))

    async def _on_click(self, event: events.Click) -> None:
        if self._swallow_click:
            self._swallow_click = False
            event.prevent_default()
            event.stop()

"""The main screen's widgets: host panes, VM tables, the filter and status lines."""

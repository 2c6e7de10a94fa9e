"""Thin adapters that plug jndplug into training frameworks (installed as ``jndplug.integrations``).

Each framework has its own subpackage; importing one imports that framework. The jndplug core
never imports them.
"""

"""The README's diagram and port table are derived from the service declarations."""

from __future__ import annotations

from infra import docs
from infra.catalog import declare_services
from infra.config import StackConfig


def test_readme_generated_block_is_up_to_date():
    current = docs.README.read_text()
    assert docs.render_readme(current) == current, "run: python -m infra.docs --write"


def test_a_new_service_appears_in_the_table_and_diagram_without_another_edit():
    config = StackConfig.model_validate({"environment": "dev", "target": {"kind": "local"}, "ports": {"base": 5200}})
    catalog = declare_services(config)
    from tests.conftest import make_spec

    extended = catalog.model_copy(update={"services": catalog.services + (make_spec("reports-api"),)})
    assert "| reports-api | test service | 8080 | internal |" in docs.port_table({"dev": extended})
    diagram = docs.diagram(extended)
    assert 'reports-api["reports-api :8080"]' in diagram and "gateway -->|/reports-api/| reports-api" in diagram

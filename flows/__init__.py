"""The platform's scheduled flows, served by the flows runner (`python -m flows.serve`).

Everything a flow knows about the stack comes from one rendered file (`flows.config`); this
package never imports Pulumi or the program (`infra/`, `components/`).
"""

"""The example agencies of the reference scenario (DESIGN, top), each an adapter process
with its own SQLite database of generated sample data:

- :mod:`adapters.agencies.tax` — the State Tax Committee (``tax.v1.Tax``);
- :mod:`adapters.agencies.cadastre` — the cadastre agency (``cadastre.v1.Cadastre``);
- :mod:`adapters.agencies.property` — the Ministry of Justice's property registration
  (``property.v1.PropertyRegistration``), which asks the other two through its gateway;
- :mod:`adapters.agencies.scenario` — the ids of the scenario's parcels, people and
  subsystems, present in the sample data.

``serai adapter run tax|cadastre|property --config FILE`` runs one of them.
"""

__all__: list[str] = []

"""The studio shell: CLI, rendering, sample packs and the Streamlit app. Calls library code only."""
